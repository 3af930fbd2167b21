"""Housekeeping."""

from __future__ import annotations

from booking import idempotency, outbox
from jobs.db import job_session


async def prune_idempotency_keys() -> int:
    """Hourly: forget idempotency keys past their 24 hours."""
    total = 0
    async with job_session() as session:
        while done := await idempotency.prune(session):
            total += done
    return total


async def prune_outbox() -> int:
    """Hourly: forget facts relayed more than a week ago."""
    total = 0
    async with job_session() as session:
        while done := await outbox.prune(session):
            total += done
    return total
