"""The admission tick as the worker daemon runs it: a periodic job every second, on the holds
queue, that admits the fans the rooms' rates allow and is safe to run again at once."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.waiting_room import service as rooms
from daemon.periodic import PERIODIC, task_of
from jobs.waiting_room import admit_room, admit_waiting_fans
from tests.factories import make_event
from tests.waiting_room import make_fans

pytestmark = pytest.mark.usefixtures("job_env")
KEY = Ed25519PrivateKey.generate()


def test_the_tick_is_a_periodic_job_of_every_second_on_the_holds_queue() -> None:
    (task,) = [task for task in PERIODIC if task.func == "jobs.waiting_room.admit_waiting_fans"]
    assert (task.every, task.queue) == (1, "holds")
    assert task_of(f"tick-{task.name}-1800000000") == task.name


async def test_the_job_admits_waiting_fans_and_a_repeat_at_once_admits_none(
    session: AsyncSession, redis_url: str
) -> None:
    event = await make_event(session, seats=2, ga_capacity=2)
    idle = await make_event(session, seats=2, ga_capacity=2)
    now = dt.datetime.now(dt.UTC)
    for event_id in (event.event_id, idle.event_id):
        await rooms.set_room(
            session,
            event_id,
            enabled=True,
            sale_opens_at=now - dt.timedelta(seconds=10),
            rate_per_minute=60,
            now=now - dt.timedelta(minutes=1),
        )
    await session.commit()
    fans = await make_fans(session, 5)
    redis = Redis.from_url(redis_url)
    try:
        for fan_id in fans:
            await rooms.join(session, redis, event.event_id, fan_id, signing_key=KEY)
        await session.commit()
    finally:
        await redis.aclose()

    first = await admit_waiting_fans()
    # Ten seconds since the opening at sixty a minute, but at most two seconds' worth carried.
    assert first == {"rooms": 2, "admitted": 2}
    assert (await admit_waiting_fans())["admitted"] == 0
    assert await admit_room(str(event.event_id)) == 0
    recorded = await session.scalar(text("SELECT count(*) FROM waiting_room_admissions"))
    assert recorded == 2
