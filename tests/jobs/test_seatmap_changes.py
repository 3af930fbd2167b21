"""What the outbox relay writes for live seat maps (``booking.inventory.live``): one entry per
event per batch, stating the units' states as PostgreSQL has them when it is written, in the
form Litestar's own Redis stream backend reads."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from litestar.channels.backends.redis import RedisChannelsStreamBackend
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.seatmap_stream import SeatmapStreams
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection
from booking.inventory import live
from booking.outbox import Topic, emit
from jobs.outbox import relay_outbox, seatmap_version_key
from tests.factories import SmallEvent, make_event, make_fan

pytestmark = pytest.mark.usefixtures("job_env")


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=4)


def _entries(redis: Redis, event_id: uuid.UUID) -> list[dict[str, object]]:
    return [json.loads(fields[b"data"]) for _, fields in redis.xrange(live.stream_key(event_id))]


async def _hold(
    session: AsyncSession, event: SmallEvent, selection: SeatSelection | GASelection
) -> holds.HoldView:
    view = await holds.create_hold(
        session,
        owner=Owner(fan_id=await make_fan(session)),
        event_id=event.event_id,
        selection=selection,
        policy=HoldPolicy(),
    )
    await session.commit()
    return view


async def test_a_batch_becomes_one_entry_per_event_with_the_states_of_now(
    session: AsyncSession, event: SmallEvent, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)
    other = await make_event(session, seats=2, ga_capacity=1)
    kept = await _hold(session, event, SeatSelection(tuple(event.seat_ids[:2])))
    gone = await _hold(session, event, SeatSelection(tuple(event.seat_ids[2:3])))
    await holds.release_hold(session, hold_id=gone.id)
    await session.commit()
    ga = await _hold(session, event, GASelection(event.ga_tier_id, 3))
    await _hold(session, other, SeatSelection(tuple(other.seat_ids[:1])))

    assert await relay_outbox() == {"delivered": 5, "failed": 0}
    [entry] = _entries(redis, event.event_id)
    assert entry["event_id"] == str(event.event_id)
    assert entry["version"] == int(redis.get(seatmap_version_key(str(event.event_id))) or 0) == 1
    assert dt.datetime.fromisoformat(str(entry["as_of"]))
    units = {group["state"]: group for group in entry["units"]}  # type: ignore[attr-defined]
    # The released seat's hold and release fold into where it is now: available.
    assert sorted(units["unavailable"]["seat_ids"]) == sorted(event.seat_ids[:2])
    assert sorted(units["unavailable"]["unit_ids"]) == sorted(
        [i.unit_id for i in kept.items] + [i.unit_id for i in ga.items]
    )
    assert units["available"]["seat_ids"] == event.seat_ids[2:3]
    assert {tier["tier_id"]: tier["remaining"] for tier in entry["tiers"]} == {  # type: ignore[attr-defined]
        str(event.seat_tier_id): 4,
        str(event.ga_tier_id): 1,
    }
    assert len(_entries(redis, other.event_id)) == 1


async def test_a_fact_relayed_late_states_the_units_as_they_are_not_as_they_were(
    session: AsyncSession, event: SmallEvent, redis_url: str
) -> None:
    redis = Redis.from_url(redis_url)
    view = await _hold(session, event, SeatSelection(tuple(event.seat_ids[:1])))
    await holds.release_hold(session, hold_id=view.id)
    await session.commit()
    # The release is relayed first (another relay took it), the hold after.
    await session.execute(
        text(
            "UPDATE outbox SET available_at = now() + interval '1 hour' WHERE id = (SELECT min(id) FROM outbox)"
        )
    )
    await session.commit()
    assert (await relay_outbox())["delivered"] == 1
    await session.execute(text("UPDATE outbox SET available_at = now()"))
    await session.commit()
    assert (await relay_outbox())["delivered"] == 1
    late = _entries(redis, event.event_id)[-1]
    assert [group["state"] for group in late["units"]] == ["available"]  # type: ignore[attr-defined]


async def test_a_malformed_fact_fails_alone(session: AsyncSession, event: SmallEvent, redis_url: str) -> None:
    await emit(session, Topic.UNITS_CHANGED, {"event_id": "not-a-uuid", "unit_ids": [1]})
    await emit(session, Topic.UNITS_CHANGED, {"event_id": str(event.event_id), "unit_ids": ["x"]})
    await session.commit()
    await _hold(session, event, SeatSelection(tuple(event.seat_ids[:1])))
    assert await relay_outbox() == {"delivered": 1, "failed": 2}
    assert len(_entries(Redis.from_url(redis_url), event.event_id)) == 1


async def test_the_entries_are_in_the_form_litestars_stream_backend_reads_and_writes(
    session: AsyncSession, event: SmallEvent, redis_url: str
) -> None:
    await _hold(session, event, SeatSelection(tuple(event.seat_ids[:1])))
    await relay_outbox()
    redis = AsyncRedis.from_url(redis_url)
    try:
        stock = RedisChannelsStreamBackend(history=10, redis=redis, key_prefix=live.KEY_PREFIX)
        ours = SeatmapStreams(redis)
        name = live.channel(event.event_id)
        [written] = await stock.get_history(name)
        assert live.decode(written).event_id == event.event_id
        assert await ours.get_history(name) == [written]
        # And the other way: what the plugin's backend appends, ours reads back.
        await stock.publish(b'{"x": 1}', [name])
        assert (await ours.get_history(name, 1)) == [b'{"x": 1}']
    finally:
        await redis.aclose()
