"""The seat-map reads and the snapshot cache, against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from booking.db import make_sessionmaker
from booking.errors import EventNotFound
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.inventory import seatmap
from jobs.outbox import seatmap_version_key
from tests.factories import SmallEvent, advance_clock, make_event, make_fan


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=4)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def _hold(session: AsyncSession, event: SmallEvent, seats: list[int]) -> holds.HoldView:
    view = await holds.create_hold(
        session,
        owner=Owner(fan_id=await make_fan(session)),
        event_id=event.event_id,
        selection=SeatSelection(tuple(seats)),
        policy=HoldPolicy(),
    )
    await session.commit()
    return view


def render(layout: seatmap.Layout, states: seatmap.SeatStates, version: int) -> bytes:
    """A minimal body: enough to tell snapshots apart."""
    return msgspec.json.encode({"version": version, "taken": sorted(states.taken), "as_of": states.as_of})


def test_the_version_key_is_the_outbox_consumers() -> None:
    event_id = uuid.uuid4()
    assert seatmap.version_key(event_id) == seatmap_version_key(str(event_id))


async def test_the_layout_has_every_seat_with_its_tier_and_every_ga_area(
    session: AsyncSession, event: SmallEvent
) -> None:
    layout = await seatmap.load_layout(session, event.event_id)
    seats = [seat for section in layout.sections for row in section.rows for seat in row.seats]
    assert [seat.id for seat in seats] == event.seat_ids
    assert {seat.tier_id for seat in seats} == {event.seat_tier_id}
    assert [(a.id, a.tier_ids) for a in layout.ga_areas] == [(event.ga_area_id, [event.ga_tier_id])]
    assert {t.id: (t.price_minor, t.currency) for t in layout.tiers} == {
        event.seat_tier_id: (5000, "GBP"),
        event.ga_tier_id: (3000, "GBP"),
    }
    # The cache stores it as msgpack: it survives the round trip unchanged.
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(layout), type=seatmap.Layout) == layout


async def test_unknown_and_draft_events_are_not_found(session: AsyncSession, event: SmallEvent) -> None:
    with pytest.raises(EventNotFound):
        await seatmap.load_layout(session, uuid.uuid4())
    with pytest.raises(EventNotFound):
        await seatmap.availability(session, uuid.uuid4())
    await session.execute(text("UPDATE events SET status = 'draft' WHERE id = :e"), {"e": event.event_id})
    await session.commit()
    with pytest.raises(EventNotFound):
        await seatmap.load_layout(session, event.event_id)
    with pytest.raises(EventNotFound):
        await seatmap.availability(session, event.event_id)


async def test_states_follow_the_claim_guard(session: AsyncSession, event: SmallEvent) -> None:
    await _hold(session, event, [event.seat_ids[0]])
    await advance_clock(session, 3600)
    live = await _hold(session, event, [event.seat_ids[1]])
    await session.execute(
        text("UPDATE inventory_units SET state = 'blocked' WHERE seat_id = :s"), {"s": event.seat_ids[2]}
    )
    await session.commit()

    states = await seatmap.load_states(session, event.event_id)
    # Held past its deadline: free, whatever its row still says.
    assert event.seat_ids[0] not in states.taken
    assert states.taken == {event.seat_ids[1], event.seat_ids[2]}
    assert states.ga_remaining == {(event.ga_area_id, event.ga_tier_id): 4}
    assert states.next_change == live.expires_at


async def test_availability_counts_claimable_units(session: AsyncSession, event: SmallEvent) -> None:
    await _hold(session, event, event.seat_ids[:2])
    await session.execute(
        text("UPDATE inventory_units SET state = 'blocked' WHERE seat_id = :s"), {"s": event.seat_ids[5]}
    )
    await session.commit()
    found = await seatmap.availability(session, event.event_id)
    assert {(t.tier_id, t.kind, t.remaining) for t in found.tiers} == {
        (event.seat_tier_id, seatmap.TierKind.SEATED, 3),
        (event.ga_tier_id, seatmap.TierKind.GA, 4),
    }


async def test_a_snapshot_is_reused_until_the_version_moves(
    session: AsyncSession, event: SmallEvent, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seatmap, "MIN_REBUILD_SECONDS", 0)
    cache = seatmap.SeatmapCache(redis)
    first = await cache.get(session, event.event_id, render, gzipped=False)
    assert first.version == 0
    assert first.body is not None
    assert (await cache.get(session, event.event_id, render, gzipped=False)).body == first.body
    assert (
        await cache.get(session, event.event_id, render, gzipped=False, if_none_match=[first.etag])
    ).body is None

    await _hold(session, event, [event.seat_ids[0]])
    await redis.incr(seatmap.version_key(event.event_id))
    second = await cache.get(session, event.event_id, render, gzipped=False)
    assert second.version == 1
    assert second.etag != first.etag
    assert second.body is not None
    assert msgspec.json.decode(second.body)["taken"] == [event.seat_ids[0]]


async def test_while_one_request_rebuilds_the_others_serve_the_previous_snapshot(
    session: AsyncSession, event: SmallEvent, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seatmap, "MIN_REBUILD_SECONDS", 0)
    cache = seatmap.SeatmapCache(redis)
    first = await cache.get(session, event.event_id, render, gzipped=True)
    await redis.incr(seatmap.version_key(event.event_id))
    # Someone else is rebuilding.
    await redis.set(f"boxoffice:event:{{{event.event_id}}}:seatmap:lock", "other", ex=10)
    stale = await cache.get(session, event.event_id, render, gzipped=True)
    assert (stale.version, stale.etag, stale.body) == (0, first.etag, first.body)

    await redis.delete(f"boxoffice:event:{{{event.event_id}}}:seatmap:lock")
    assert (await cache.get(session, event.event_id, render, gzipped=True)).version == 1


async def test_rebuilds_are_spaced_by_the_lingering_lock(
    session: AsyncSession, event: SmallEvent, redis: Redis
) -> None:
    cache = seatmap.SeatmapCache(redis)
    lock = f"boxoffice:event:{{{event.event_id}}}:seatmap:lock"
    await cache.get(session, event.event_id, render, gzipped=False)
    assert 0 < await redis.pttl(lock) <= seatmap.MIN_REBUILD_SECONDS * 1000
    await redis.incr(seatmap.version_key(event.event_id))
    assert (await cache.get(session, event.event_id, render, gzipped=False)).version == 0
    await asyncio.sleep(seatmap.MIN_REBUILD_SECONDS + 0.05)
    assert (await cache.get(session, event.event_id, render, gzipped=False)).version == 1


async def test_a_cold_herd_waits_for_one_rebuild(
    engine: AsyncEngine, event: SmallEvent, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = 0
    load_states = seatmap.load_states

    async def counted(session: AsyncSession, event_id: uuid.UUID) -> seatmap.SeatStates:
        nonlocal builds
        builds += 1
        await asyncio.sleep(0.2)
        return await load_states(session, event_id)

    monkeypatch.setattr(seatmap, "load_states", counted)
    sessions = make_sessionmaker(engine)

    async def one() -> seatmap.Snapshot:
        async with sessions() as session:
            return await seatmap.SeatmapCache(redis).get(session, event.event_id, render, gzipped=False)

    snapshots = await asyncio.gather(*(one() for _ in range(25)))
    assert builds == 1
    assert len({s.etag for s in snapshots}) == 1


async def test_a_failed_rebuild_frees_the_lock_at_once(session: AsyncSession, redis: Redis) -> None:
    missing = uuid.uuid4()
    with pytest.raises(EventNotFound):
        await seatmap.SeatmapCache(redis).get(session, missing, render, gzipped=False)
    assert not await redis.exists(f"boxoffice:event:{{{missing}}}:seatmap:lock")


async def test_a_snapshot_showing_a_hold_expires_with_the_hold(
    session: AsyncSession, event: SmallEvent, redis: Redis
) -> None:
    view = await _hold(session, event, [event.seat_ids[0]])
    before = dt.datetime.now(dt.UTC)
    await seatmap.SeatmapCache(redis).get(session, event.event_id, render, gzipped=False)
    meta = msgspec.msgpack.decode(
        await redis.get(f"boxoffice:event:{{{event.event_id}}}:seatmap:meta"), type=seatmap.SnapshotMeta
    )
    assert meta.fresh_until is not None
    assert abs(meta.fresh_until - view.expires_at.timestamp()) < 5
    assert not meta.serves(0, meta.fresh_until)
    assert meta.serves(0, before.timestamp())
    assert not meta.serves(1, before.timestamp())


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (['W/"1-ab"'], True),
        (['"1-ab"'], True),
        (["*"], True),
        (['"x"', 'W/"1-ab"'], True),
        (['"1-ac"'], False),
        ([], False),
    ],
)
def test_etags_compare_weakly(header: list[str], matches: bool) -> None:
    assert seatmap.etag_matches(header, 'W/"1-ab"') is matches
