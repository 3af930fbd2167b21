"""Hold tidy-up jobs. They only tidy: the claim statement already treats an expired hold's
units as free, so a late or lost job never keeps a seat off sale. Both are safe to run twice."""

from __future__ import annotations

import uuid

from booking.holds import service as holds
from booking.logs import bind, get_logger
from jobs.db import job_session

log = get_logger("boxoffice.jobs.holds")


async def expire_hold(hold_id: str) -> bool:
    """Scheduled at a hold's deadline. Returns whether it changed anything."""
    bind(hold_id=hold_id)
    async with job_session() as session:
        changed = await holds.expire_hold(session, uuid.UUID(hold_id))
        await session.commit()
    if changed:
        log.info("hold expired")
    return changed


async def sweep_expired_holds(limit: int = 500) -> int:
    """Every 15 s: whatever expiry jobs missed (a dead worker, a lost Redis)."""
    total = 0
    async with job_session() as session:
        while True:
            done = await holds.sweep_expired(session, limit=limit)
            await session.commit()
            total += done
            if done < limit:
                # Only when there was something to do: the sweeper runs every 15 s.
                if total:
                    log.info("holds expired by the sweeper", count=total)
                return total
