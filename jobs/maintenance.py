"""Housekeeping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from booking import idempotency, outbox
from jobs.db import job_session


async def _in_batches(prune: Callable[[AsyncSession], Awaitable[int]]) -> int:
    # Each batch commits on its own: a long backlog never becomes one long transaction.
    total = 0
    async with job_session() as session:
        while done := await prune(session):
            total += done
    return total


async def prune_idempotency_keys() -> int:
    """Hourly: forget idempotency keys past their 24 hours."""
    return await _in_batches(idempotency.prune)


async def prune_outbox() -> int:
    """Hourly: forget facts relayed more than a week ago."""
    return await _in_batches(outbox.prune)
