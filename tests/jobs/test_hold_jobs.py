"""Promises 3, 5 and 6 in the daemon: expiry needs no job, jobs and relays can repeat."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from redis import Redis
from rq import Queue
from rq.registry import ScheduledJobRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking import outbox
from booking.errors import SeatsTaken
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.inventory import live
from booking.outbox import Message, Topic, emit, relay_batch
from daemon.periodic import PERIODIC, tick
from jobs.holds import expire_hold, sweep_expired_holds
from jobs.maintenance import prune_outbox
from jobs.outbox import Consumers, relay_outbox, seatmap_version_key
from tests.factories import SmallEvent, advance_clock, make_event, make_fan

pytestmark = pytest.mark.usefixtures("job_env")


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=2)


async def _hold(
    session: AsyncSession, event: SmallEvent, seats: list[int], policy: HoldPolicy
) -> holds.HoldView:
    owner = Owner(fan_id=await make_fan(session))
    view = await holds.create_hold(
        session, owner=owner, event_id=event.event_id, selection=SeatSelection(tuple(seats)), policy=policy
    )
    await session.commit()
    return view


async def test_with_a_five_second_ttl_and_no_worker_the_seats_free_up_on_time(
    session: AsyncSession, event: SmallEvent
) -> None:
    policy = HoldPolicy(ttl=dt.timedelta(seconds=5))
    first = await _hold(session, event, event.seat_ids[:2], policy)
    with pytest.raises(SeatsTaken):
        await _hold(session, event, event.seat_ids[:2], policy)
    await session.rollback()
    remaining = (first.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
    await asyncio.sleep(max(remaining, 0) + 0.2)
    second = await _hold(session, event, event.seat_ids[:2], policy)
    assert {i.seat_id for i in second.items} == set(event.seat_ids[:2])
    # No job ran: the first hold is still 'active' in its row, and blocks no one.
    assert (await holds.get_hold(session, first.id)).state == "active"


async def test_a_duplicated_expiry_job_has_one_effect(session: AsyncSession, event: SmallEvent) -> None:
    view = await _hold(session, event, event.seat_ids[:2], HoldPolicy())
    await advance_clock(session, 600)
    assert await expire_hold(str(view.id)) is True
    assert await expire_hold(str(view.id)) is False
    freed = "SELECT count(*) FROM outbox WHERE topic = 'units.changed' AND payload->>'state' = 'available'"
    assert await session.scalar(text(freed)) == 1
    assert await session.scalar(text("SELECT count(*) FROM inventory_units WHERE state = 'held'")) == 0


async def test_an_expiry_job_before_the_deadline_does_nothing(
    session: AsyncSession, event: SmallEvent
) -> None:
    view = await _hold(session, event, event.seat_ids[:1], HoldPolicy())
    assert await expire_hold(str(view.id)) is False
    assert (await holds.get_hold(session, view.id)).state == "active"


async def test_the_sweeper_job_tidies_everything_overdue(session: AsyncSession, event: SmallEvent) -> None:
    for seat in event.seat_ids:
        await _hold(session, event, [seat], HoldPolicy())
    await advance_clock(session, 600)
    assert await sweep_expired_holds(limit=4) == len(event.seat_ids)  # more than one batch
    assert await sweep_expired_holds() == 0


async def test_a_duplicated_relay_has_one_effect(
    session: AsyncSession, event: SmallEvent, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)
    view = await _hold(session, event, event.seat_ids[:2], HoldPolicy())
    assert await relay_outbox() == {"delivered": 1, "failed": 0}
    # The relay died before recording the delivery: everything goes out again.
    await session.execute(text("UPDATE outbox SET relayed_at = NULL"))
    await session.commit()
    assert await relay_outbox() == {"delivered": 1, "failed": 0}

    # Expiry needs no job: the hold's deadline is the database's to judge, the sweeper tidies.
    scheduled = ScheduledJobRegistry(queue=Queue("holds", connection=redis)).get_job_ids()
    assert scheduled == []
    assert int(redis.get(seatmap_version_key(str(event.event_id))) or 0) == 1
    published = [json.loads(fields[b"data"]) for _, fields in redis.xrange(live.stream_key(event.event_id))]
    assert len(published) == 1
    [units] = published[0]["units"]
    assert units["unit_ids"] == [i.unit_id for i in view.items]
    assert units["state"] == "unavailable"


async def test_a_failing_consumer_is_retried_later_not_lost(session: AsyncSession, event: SmallEvent) -> None:
    await _hold(session, event, event.seat_ids[:1], HoldPolicy())

    async def broken(message: Message) -> None:
        raise ConnectionError("consumer down")

    result = await relay_batch(session, broken, topics=Consumers.TOPICS)
    assert result.failed == 1
    rows = (
        await session.execute(
            text("SELECT attempts, relayed_at, available_at > now(), last_error FROM outbox")
        )
    ).all()
    assert all(a == 1 and r is None and later and "consumer down" in e for a, r, later, e in rows)
    # Not due yet: the next relay skips them.
    delivered: list[Message] = []

    async def working(message: Message) -> None:
        delivered.append(message)

    assert (await relay_batch(session, working, topics=Consumers.TOPICS)).delivered == 0
    await session.execute(text("UPDATE outbox SET available_at = now()"))
    await session.commit()
    assert (await relay_batch(session, working, topics=Consumers.TOPICS)).delivered == 1
    assert len({m.event_id for m in delivered}) == 1


async def test_a_fact_no_consumer_acts_on_stays_pending(session: AsyncSession, event: SmallEvent) -> None:
    await emit(session, "gate.scan_uploaded", {"ticket_id": "x"}, catalog_event_id=event.event_id)
    await session.commit()
    assert await relay_outbox() == {"delivered": 0, "failed": 0}
    pending = await session.scalar(
        text("SELECT count(*) FROM outbox WHERE topic = 'gate.scan_uploaded' AND relayed_at IS NULL")
    )
    assert pending == 1


async def test_a_fatal_error_during_delivery_rolls_the_batch_back(
    session: AsyncSession, event: SmallEvent
) -> None:
    await _hold(session, event, event.seat_ids[:1], HoldPolicy())

    class Stop(BaseException):
        pass

    async def killed(message: Message) -> None:
        raise Stop()

    with pytest.raises(Stop):
        await relay_batch(session, killed, topics=Consumers.TOPICS, fatal=(Stop,))
    await session.rollback()
    rows = (await session.execute(text("SELECT attempts, relayed_at FROM outbox"))).all()
    assert rows
    assert all(attempts == 0 and relayed is None for attempts, relayed in rows)


async def test_a_publish_that_fails_is_published_on_the_retry(
    session: AsyncSession, event: SmallEvent, redis_url: str
) -> None:
    await _hold(session, event, event.seat_ids[:1], HoldPolicy())
    redis = Redis.from_url(redis_url)
    broken = Consumers(Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2), session)
    result = await relay_batch(session, broken.deliver, topics=[Topic.UNITS_CHANGED], flush=broken.flush)
    assert result.failed == 1
    await session.execute(text("UPDATE outbox SET available_at = now()"))
    await session.commit()
    working = Consumers(redis, session)
    result = await relay_batch(session, working.deliver, topics=[Topic.UNITS_CHANGED], flush=working.flush)
    assert result.delivered == 1
    assert redis.xlen(live.stream_key(event.event_id)) == 1


def test_each_periodic_slot_is_enqueued_once_however_many_workers_tick(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    now = 1_800_000_000.5
    first = tick(redis, now)
    assert len(first) == len(PERIODIC)
    assert tick(redis, now) == []  # a second worker, same second
    # Only the 1 s tasks have a new slot.
    assert tick(redis, now + 1) == ["tick-relay-1800000001", "tick-admit-1800000001"]
    assert tick(redis, now + 15) == ["tick-relay-1800000015", "tick-sweep-120000001", "tick-admit-1800000015"]


async def test_facts_nothing_consumes_are_drained_not_left_pending(session: AsyncSession) -> None:
    """Rows of topics no code writes any more (nothing ever took hold.released, hold.expired
    or hold.payment_failed) are marked relayed, so the pending set does not grow for ever."""
    for topic in ("hold.released", "hold.expired", "hold.payment_failed", "hold.created"):
        await emit(session, topic, {"hold_id": "h"})
    await session.commit()
    assert await relay_outbox() == {"delivered": 4, "failed": 0}
    assert await session.scalar(text("SELECT count(*) FROM outbox WHERE relayed_at IS NULL")) == 0


async def test_relayed_facts_are_pruned_after_their_retention_and_pending_ones_never(
    session: AsyncSession,
) -> None:
    for n in range(3):
        await emit(session, Topic.UNITS_CHANGED, {"n": n})
    await session.commit()
    ids = (await session.scalars(text("SELECT id FROM outbox ORDER BY id"))).all()
    old, recent, pending = ids
    await session.execute(
        text("UPDATE outbox SET relayed_at = now() - :age WHERE id = :id"),
        [
            {"id": old, "age": outbox.RETENTION + dt.timedelta(minutes=1)},
            {"id": recent, "age": dt.timedelta(days=1)},
        ],
    )
    await session.execute(
        text("UPDATE outbox SET created_at = now() - interval '30 days' WHERE id = :id"), {"id": pending}
    )
    await session.commit()
    assert await prune_outbox() == 1
    assert (await session.scalars(text("SELECT id FROM outbox ORDER BY id"))).all() == [recent, pending]
    assert await prune_outbox() == 0
