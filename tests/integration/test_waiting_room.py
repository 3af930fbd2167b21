"""The waiting room's service against real PostgreSQL and Redis: fairness of the draw and of
the queue, the metered rate, the grace, and never admitting a fan twice.

Time is simulated: every verb and the admission tick take ``now``."""

from __future__ import annotations

import datetime as dt
import random
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.db import make_sessionmaker
from booking.errors import (
    AdmissionRequired,
    AdmissionRevoked,
    AdmissionTokenExpired,
    InvalidRequest,
    NotInQueue,
    RoomNotConfigured,
    RoomStateConflict,
    WaitingRoomNotActive,
    WaitingRoomNotOpen,
)
from booking.redis_client import async_client
from booking.waiting_room import service as rooms
from booking.waiting_room import tokens
from booking.waiting_room.models import AdmissionRecord
from booking.waiting_room.service import PlaceState
from tests.factories import SmallEvent, make_event
from tests.waiting_room import BEFORE, SALE_OPENS, at, make_fans, make_room, spearman

KEY = Ed25519PrivateKey.generate()
PUBLIC = [KEY.public_key()]


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=4, ga_capacity=10)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


async def join(
    session: AsyncSession, redis: Redis, event: SmallEvent, fan_id: uuid.UUID, now: dt.datetime, **kw: object
) -> rooms.Place:
    place = await rooms.join(session, redis, event.event_id, fan_id, signing_key=KEY, now=now, **kw)  # type: ignore[arg-type]
    await session.commit()
    return place


async def poll(
    session: AsyncSession, redis: Redis, event: SmallEvent, fan_id: uuid.UUID, now: dt.datetime
) -> rooms.Place:
    place = await rooms.position(session, redis, event.event_id, fan_id, signing_key=KEY, now=now)
    await session.commit()
    return place


async def run_sale(
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    event: SmallEvent,
    seconds: int,
    *,
    start: float = 0,
    step: float = 1,
) -> list[uuid.UUID]:
    """Tick the room every ``step`` seconds of simulated time; the fans admitted, in order."""
    admitted: list[uuid.UUID] = []
    t = start
    while t <= start + seconds:
        admitted += (await rooms.tick(sessions, redis, event.event_id, now=at(t))).admitted
        t += step
    return admitted


# --- settings ----------------------------------------------------------------------------


async def test_a_room_is_created_with_its_defaults_and_validated(
    session: AsyncSession, event: SmallEvent
) -> None:
    assert await rooms.get_room(session, event.event_id) is None
    made = await rooms.set_room(session, event.event_id, now=BEFORE)
    await session.commit()
    assert (made.enabled, made.rate_per_minute, made.window_seconds, made.grace_seconds) == (
        False,
        500,
        600,
        120,
    )
    assert made.max_shoppers is None
    assert made.paused is False
    # The sale opens with the event's on-sale start unless staff say otherwise.
    starts = await session.scalar(
        text("SELECT onsale_starts_at FROM events WHERE id = :e"), {"e": event.event_id}
    )
    assert made.sale_opens_at == starts
    for bad in (
        {"rate_per_minute": 0},
        {"rate_per_minute": 100_001},
        {"window_seconds": 59},
        {"window_seconds": 3601},
        {"grace_seconds": 5},
        {"max_shoppers": 0},
        {"opens_at": SALE_OPENS + dt.timedelta(seconds=1), "sale_opens_at": SALE_OPENS},
        {"opens_at": dt.datetime(2026, 12, 1, 9, 0)},
        {"clear": ["rate_per_minute"]},
    ):
        with pytest.raises(InvalidRequest):
            await rooms.set_room(session, event.event_id, now=BEFORE, **bad)  # type: ignore[arg-type]
        await session.rollback()
    assert await rooms.get_room(session, event.event_id) == made
    changed = await rooms.set_room(session, event.event_id, max_shoppers=50, rate_per_minute=1200, now=BEFORE)
    assert (changed.max_shoppers, changed.rate_per_minute) == (50, 1200)
    cleared = await rooms.set_room(session, event.event_id, clear=["max_shoppers"], now=BEFORE)
    assert cleared.max_shoppers is None
    assert cleared.rate_per_minute == 1200


async def test_pause_and_resume_are_guarded(session: AsyncSession, event: SmallEvent) -> None:
    with pytest.raises(RoomNotConfigured):
        await rooms.pause_room(session, event.event_id)
    await make_room(session, event.event_id)
    assert (await rooms.pause_room(session, event.event_id)).paused
    with pytest.raises(RoomStateConflict):
        await rooms.pause_room(session, event.event_id)
    assert not (await rooms.resume_room(session, event.event_id)).paused
    with pytest.raises(RoomStateConflict):
        await rooms.resume_room(session, event.event_id)


async def test_the_opening_of_a_sale_under_way_cannot_move(session: AsyncSession, event: SmallEvent) -> None:
    await make_room(session, event.event_id)
    with pytest.raises(RoomStateConflict):
        await rooms.set_room(session, event.event_id, sale_opens_at=at(3600), now=at(5))
    await session.rollback()
    moved = await rooms.set_room(session, event.event_id, sale_opens_at=at(3600), now=BEFORE)
    assert moved.sale_opens_at == at(3600)


# --- fairness ------------------------------------------------------------------------------


async def _early_crowd(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    event: SmallEvent,
    count: int,
    **join_kw: object,
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """``count`` fans joining before the opening, one after the other, then the sale at 6,000
    a minute (100 a tick): (the joining order, the admission order)."""
    await make_room(session, event.event_id, rate_per_minute=6000, grace_seconds=3600)
    fans = await make_fans(session, count)
    for n, fan_id in enumerate(fans):
        place = await join(session, redis, event, fan_id, BEFORE + dt.timedelta(milliseconds=n), **join_kw)
        # Before the opening nobody has a position: the draw is not made known.
        assert place.state is PlaceState.WAITING
        assert place.position is None
    admitted = await run_sale(sessions, redis, event, count // 100 + 1)
    return fans, admitted


async def test_early_fans_are_admitted_in_a_random_order(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis: Redis, event: SmallEvent
) -> None:
    # Seeded, so the run is the same every time: the bound is a property of this draw.
    seeded = random.Random(20261204)
    fans, admitted = await _early_crowd(session, sessions, redis, event, 1000, rng=seeded.getrandbits)
    assert sorted(admitted) == sorted(fans)  # everyone, once
    joined_at = {fan: n for n, fan in enumerate(fans)}
    rho = spearman([joined_at[f] for f in admitted], list(range(len(admitted))))
    # For a uniformly random order, rho has a standard deviation of 1/sqrt(999) ~ 0.032.
    assert abs(rho) < 0.1, rho
    # Negative control: admitted in the order they joined, rho would be 1.
    assert spearman(list(range(1000)), list(range(1000))) == 1
    # And the first tenth to join is not the first tenth admitted.
    first_tenth = set(fans[:100])
    assert len(first_tenth & set(admitted[:100])) < 25


async def test_the_default_draw_comes_from_a_secure_source_and_predicts_nothing(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis: Redis, event: SmallEvent
) -> None:
    fans, admitted = await _early_crowd(session, sessions, redis, event, 1000)
    joined_at = {fan: n for n, fan in enumerate(fans)}
    rho = spearman([joined_at[f] for f in admitted], list(range(len(admitted))))
    # Six standard deviations: a false alarm about once in a billion runs.
    assert abs(rho) < 0.19, rho
    # The draw's source when none is passed: the secure one.
    assert rooms.join.__kwdefaults__["rng"] is secrets.randbits


async def test_later_fans_queue_in_arrival_order_behind_the_draw(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis: Redis, event: SmallEvent
) -> None:
    await make_room(session, event.event_id, rate_per_minute=600, grace_seconds=3600)
    early, late = await make_fans(session, 30), await make_fans(session, 30)
    for fan_id in early:
        await join(session, redis, event, fan_id, BEFORE)
    for n, fan_id in enumerate(late):
        place = await join(session, redis, event, fan_id, at(0.5 + n / 1000))
        assert place.state is PlaceState.QUEUED
        assert place.position == 31 + n
    admitted = await run_sale(sessions, redis, event, 10, start=1)
    assert set(admitted[:30]) == set(early)
    assert admitted[30:] == late


async def test_a_repeated_join_keeps_its_place(
    session: AsyncSession, redis: Redis, event: SmallEvent
) -> None:
    await make_room(session, event.event_id, grace_seconds=3600)
    fans = await make_fans(session, 20)
    for fan_id in fans:
        await join(session, redis, event, fan_id, BEFORE)
    first = [(await poll(session, redis, event, f, at(1))).position for f in fans]
    for fan_id in fans:  # again, before the opening and after it
        await join(session, redis, event, fan_id, BEFORE + dt.timedelta(seconds=1))
        await join(session, redis, event, fan_id, at(2))
    assert [(await poll(session, redis, event, f, at(3))).position for f in fans] == first
    assert sorted(p for p in first if p is not None) == list(range(1, 21))


# --- the metered rate --------------------------------------------------------------------


@pytest.mark.parametrize("step", [1.0, 0.7, 1.9])
async def test_the_admission_rate_over_a_minute_matches_the_setting(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    event: SmallEvent,
    step: float,
) -> None:
    await make_room(session, event.event_id, rate_per_minute=120, grace_seconds=3600)
    for fan_id in await make_fans(session, 400):
        await join(session, redis, event, fan_id, BEFORE)
    admitted = await run_sale(sessions, redis, event, 60, step=step)
    assert abs(len(admitted) - 120) <= 12, len(admitted)
    status = await rooms.room_status(session, redis, event.event_id, now=at(60))
    assert status.measured_rate_per_minute is not None
    assert abs(status.measured_rate_per_minute - 120) <= 12
    assert status.admitted_total == len(admitted)
    assert status.depth == 400 - len(admitted)


async def test_no_more_than_max_shoppers_shop_at_once(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis: Redis, event: SmallEvent
) -> None:
    await make_room(
        session, event.event_id, rate_per_minute=6000, max_shoppers=5, window_seconds=60, grace_seconds=3600
    )
    fans = await make_fans(session, 20)
    for fan_id in fans:
        await join(session, redis, event, fan_id, BEFORE)
    first = await run_sale(sessions, redis, event, 5)
    assert len(first) == 5
    # One gives the window up: the next tick lets one more in.
    await rooms.leave(session, redis, event.event_id, first[0], now=at(6))
    await session.commit()
    assert len((await rooms.tick(sessions, redis, event.event_id, now=at(7))).admitted) == 1
    # Once the windows end, the next five.
    assert len(await run_sale(sessions, redis, event, 3, start=70)) == 5


async def test_a_paused_room_admits_nobody_and_resumes_without_a_burst(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis: Redis, event: SmallEvent
) -> None:
    await make_room(session, event.event_id, rate_per_minute=60, grace_seconds=3600)
    for fan_id in await make_fans(session, 50):
        await join(session, redis, event, fan_id, BEFORE)
    assert len(await run_sale(sessions, redis, event, 10)) == 10
    await rooms.pause_room(session, event.event_id)
    await session.commit()
    assert await run_sale(sessions, redis, event, 20, start=11) == []
    await rooms.resume_room(session, event.event_id)
    await session.commit()
    # Twenty seconds paused earn nothing: the first tick after is a second's worth.
    assert len((await rooms.tick(sessions, redis, event.event_id, now=at(32))).admitted) == 1
    assert len(await run_sale(sessions, redis, event, 9, start=33)) == 10


# --- the grace ---------------------------------------------------------------------------


async def test_a_fan_who_stops_checking_loses_the_place_and_one_who_returns_in_time_keeps_it(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis: Redis, event: SmallEvent
) -> None:
    await make_room(session, event.event_id, grace_seconds=120, rate_per_minute=1)
    gone, back, steady = await make_fans(session, 3)
    for fan_id in (gone, back, steady):
        await join(session, redis, event, fan_id, at(-100))
    await poll(session, redis, event, steady, at(0))
    # ``back`` is away for 110 s of the 120, ``gone`` for 121.
    assert (await poll(session, redis, event, back, at(10))).state is PlaceState.QUEUED
    with pytest.raises(NotInQueue):
        await poll(session, redis, event, gone, at(21))
    # The tick drops whoever lapsed without asking again.
    await poll(session, redis, event, back, at(100))
    await poll(session, redis, event, steady, at(100))
    status = await rooms.room_status(session, redis, event.event_id, now=at(101))
    assert status.depth == 2
    result = await rooms.tick(sessions, redis, event.event_id, now=at(221))
    assert result.dropped == 2
    with pytest.raises(NotInQueue):
        await poll(session, redis, event, back, at(222))
    # Joining again is at the back, in arrival order.
    assert (await join(session, redis, event, gone, at(223))).state is PlaceState.QUEUED


# --- once ----------------------------------------------------------------------------------


async def test_an_admitted_fan_is_never_admitted_twice_even_after_redis_forgets(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis: Redis, event: SmallEvent
) -> None:
    await make_room(session, event.event_id, rate_per_minute=600, window_seconds=120, grace_seconds=3600)
    fan_id, other = await make_fans(session, 2)
    await join(session, redis, event, fan_id, BEFORE)
    assert await run_sale(sessions, redis, event, 1) == [fan_id]
    admitted = await poll(session, redis, event, fan_id, at(2))
    assert admitted.state is PlaceState.ADMITTED
    assert admitted.admission is not None
    token = admitted.admission.token
    assert token is not None
    assert admitted.admission.window_ends_at == at(1) + dt.timedelta(seconds=120)

    await redis.flushall()
    # Redis lost everything: the record answers, with the same admission and token.
    again = await poll(session, redis, event, fan_id, at(3))
    assert (again.state, again.admission) == (PlaceState.ADMITTED, admitted.admission)
    rejoined = await join(session, redis, event, fan_id, at(4))
    assert rejoined.admission == admitted.admission
    # The tick counts the shopper again and admits the next fan, not this one.
    await join(session, redis, event, other, at(5))
    assert await run_sale(sessions, redis, event, 3, start=6) == [other]
    assert await rooms.check_admission(
        session, redis, event_id=event.event_id, fan_id=fan_id, token=token, verifying_keys=PUBLIC, now=at(10)
    )
    # After the window: the admission is spent, and joining again gives no new one.
    await redis.flushall()
    late = await join(session, redis, event, fan_id, at(200))
    assert late.state is PlaceState.ENDED
    assert late.admission is not None
    assert late.admission.token is None
    assert await session.scalar(select(func.count()).select_from(AdmissionRecord)) == 2


async def test_a_tick_that_died_half_way_is_finished_by_the_next(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis: Redis, event: SmallEvent
) -> None:
    from booking.waiting_room.queue import RoomQueue

    room = await make_room(session, event.event_id, rate_per_minute=600, grace_seconds=3600)
    fans = await make_fans(session, 3)
    for fan_id in fans:
        await join(session, redis, event, fan_id, BEFORE)
    queue = RoomQueue(redis, event.event_id)
    await queue.load([])
    # A tick takes the fans and dies before recording them.
    taken = await queue.take(
        tokens.to_ms(at(1)),
        admit=True,
        opened_ms=tokens.to_ms(SALE_OPENS),
        rate_per_minute=600,
        max_shoppers=None,
        window_ms=room.window_seconds * 1000,
        grace_ms=room.grace_seconds * 1000,
    )
    assert len(taken.taken) == 3
    # Meanwhile the fans see themselves next in line, not lost.
    assert (await poll(session, redis, event, fans[0], at(1.5))).position == 1
    result = await rooms.tick(sessions, redis, event.event_id, now=at(1.6))
    assert sorted(result.admitted) == sorted(fans)
    for fan_id in fans:
        assert (await poll(session, redis, event, fan_id, at(2))).state is PlaceState.ADMITTED


# --- leaving and the gate ----------------------------------------------------------------


async def test_leaving_and_the_gate(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], redis: Redis, event: SmallEvent
) -> None:
    await make_room(session, event.event_id, rate_per_minute=600, grace_seconds=3600)
    waiting, shopper = await make_fans(session, 2)
    await join(session, redis, event, shopper, BEFORE)
    await run_sale(sessions, redis, event, 1)
    await join(session, redis, event, waiting, at(2))
    left = await rooms.leave(session, redis, event.event_id, waiting, now=at(3))
    await session.commit()
    assert left.state is PlaceState.LEFT
    with pytest.raises(NotInQueue):
        await rooms.leave(session, redis, event.event_id, waiting, now=at(4))
    await session.rollback()

    token = (await poll(session, redis, event, shopper, at(5))).admission.token  # type: ignore[union-attr]
    gate = {"event_id": event.event_id, "fan_id": shopper, "verifying_keys": PUBLIC}
    with pytest.raises(AdmissionRequired):
        await rooms.check_admission(session, redis, token=None, now=at(6), **gate)  # type: ignore[arg-type]
    assert await rooms.check_admission(session, redis, token=token, now=at(6), **gate)  # type: ignore[arg-type]
    with pytest.raises(AdmissionTokenExpired):
        await rooms.check_admission(session, redis, token=token, now=at(3600), **gate)  # type: ignore[arg-type]
    ended = await rooms.leave(session, redis, event.event_id, shopper, now=at(7))
    await session.commit()
    assert ended.state is PlaceState.ENDED
    with pytest.raises(AdmissionRevoked):
        await rooms.check_admission(session, redis, token=token, now=at(8), **gate)  # type: ignore[arg-type]
    # Redis forgetting does not bring a given-up admission back.
    await redis.flushall()
    with pytest.raises(AdmissionRevoked):
        await rooms.check_admission(session, redis, token=token, now=at(9), **gate)  # type: ignore[arg-type]
    assert (await join(session, redis, event, shopper, at(10))).state is PlaceState.ENDED


async def test_a_disabled_room_gates_nothing_and_takes_no_one(
    session: AsyncSession, redis: Redis, event: SmallEvent
) -> None:
    fan_id = (await make_fans(session, 1))[0]
    gate = {"event_id": event.event_id, "fan_id": fan_id, "verifying_keys": PUBLIC, "token": None}
    assert not await rooms.check_admission(session, redis, now=BEFORE, **gate)  # type: ignore[arg-type]
    with pytest.raises(WaitingRoomNotActive):
        await join(session, redis, event, fan_id, BEFORE)
    await make_room(session, event.event_id, opens_at=BEFORE)
    with pytest.raises(WaitingRoomNotOpen):
        await join(session, redis, event, fan_id, BEFORE - dt.timedelta(seconds=1))
    with pytest.raises(AdmissionRequired):
        await rooms.check_admission(session, redis, now=BEFORE, **gate)  # type: ignore[arg-type]
    await rooms.set_room(session, event.event_id, enabled=False, now=BEFORE)
    await session.commit()
    assert not await rooms.check_admission(session, redis, now=BEFORE, **gate)  # type: ignore[arg-type]


async def test_rooms_status_lists_enabled_rooms_and_survives_redis_errors(
    session: AsyncSession, redis: Redis, event: SmallEvent
) -> None:
    await make_room(session, event.event_id, grace_seconds=3600)
    for fan_id in await make_fans(session, 3):
        await join(session, redis, event, fan_id, BEFORE)
    (status,) = await rooms.rooms_status(session, redis, now=BEFORE)
    assert (status.depth, status.shopping, status.admitted_total, status.redis_ok) == (3, 0, 0, True)
    # Before the opening the wait of the last fan includes the time to the opening.
    assert status.eta_seconds_for_last == pytest.approx(600 + 3 * 60 / 500, abs=0.2)
    # Nothing listens on port 1: a Redis that is away, as the API's fast-failing client meets it.
    broken = async_client("redis://127.0.0.1:1/0")
    try:
        (down,) = await rooms.rooms_status(session, broken, now=BEFORE)
    finally:
        await broken.aclose()
    assert (down.depth, down.redis_ok) == (0, False)
