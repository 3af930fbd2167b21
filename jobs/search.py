"""Search-document refresh: the consumer side of ``event.changed`` on the outbox."""

from __future__ import annotations

import uuid

from booking.catalog.search import refresh_search_documents
from jobs.db import job_session


async def refresh_event_search(event_id: str) -> int:
    """Rewrite one event's search document from its current state. Safe to run twice, late or
    out of order (it always writes what is true now); returns 1, or 0 if the event is gone."""
    async with job_session() as session:
        written = await refresh_search_documents(session, [uuid.UUID(event_id)])
        await session.commit()
    return written
