"""The waiting rooms' admission tick. Safe to run twice, or twice at once: a tick earns
admission credit only for the time since the last one, in one Redis script
(``booking.waiting_room.service.tick``)."""

from __future__ import annotations

import uuid

from booking.logs import bind, get_logger
from booking.redis_client import async_client
from booking.waiting_room import service as rooms
from jobs.db import job_sessions, redis_url

log = get_logger("boxoffice.jobs.waiting_room")


async def admit_waiting_fans() -> dict[str, int]:
    """Every second: in each active room, drop the places that lapsed and admit the fans
    the room's rate allows. Returns the rooms ticked and the fans admitted."""
    redis = async_client(redis_url())
    try:
        async with job_sessions() as sessions:
            results = await rooms.tick_rooms(sessions, redis)
    finally:
        await redis.aclose()
    admitted = sum(len(result.admitted) for result in results)
    if admitted:
        log.info("fans admitted from waiting rooms", rooms=len(results), admitted=admitted)
    return {"rooms": len(results), "admitted": admitted}


async def admit_room(event_id: str) -> int:
    """One room's tick now (what the periodic job does for each room); returns the fans
    admitted."""
    bind(event_id=event_id)
    redis = async_client(redis_url())
    try:
        async with job_sessions() as sessions:
            result = await rooms.tick(sessions, redis, uuid.UUID(event_id))
    finally:
        await redis.aclose()
    return len(result.admitted)
