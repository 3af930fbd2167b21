"""Housekeeping."""

from __future__ import annotations

from booking import idempotency
from jobs.db import job_session


async def prune_idempotency_keys() -> int:
    """Hourly: forget idempotency keys past their 24 hours."""
    total = 0
    async with job_session() as session:
        while done := await idempotency.prune(session):
            total += done
    return total
