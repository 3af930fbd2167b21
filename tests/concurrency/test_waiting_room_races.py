"""The waiting room under concurrency: joins racing joins, ticks racing ticks (two daemons),
and hypothesis driving random sequences of joins, polls, leaves, ticks and Redis losing
everything, with the queue's invariants checked after every step.

The tick race has a negative control: the same harness driving a read-then-write tick (test
code only) admits more than the rate allows, which proves the check would catch a credit
that is not earned atomically.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.db import make_async_engine, make_sessionmaker
from booking.errors import BookingError
from booking.waiting_room import service as rooms
from booking.waiting_room import tokens
from booking.waiting_room.queue import CARRY_MS, keys
from tests.factories import make_event
from tests.waiting_room import BEFORE, at, make_fans, make_room

KEY = Ed25519PrivateKey.generate()


@pytest.fixture
async def race_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_async_engine(database_url, pool_size=30, max_overflow=0, pool_timeout=60)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[Redis]]:
    """Several Redis connections: one per racing daemon or API process."""
    made = [Redis.from_url(redis_url) for _ in range(4)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


async def _join(
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    event_id: uuid.UUID,
    fan_id: uuid.UUID,
    now: dt.datetime,
) -> rooms.Place:
    async with sessions() as session:
        place = await rooms.join(session, redis, event_id, fan_id, signing_key=KEY, now=now)
        await session.commit()
        return place


@pytest.mark.parametrize("when", ["before the opening", "after it"])
async def test_concurrent_joins_of_one_fan_give_one_place(
    race_engine: AsyncEngine, clients: list[Redis], when: str
) -> None:
    sessions = make_sessionmaker(race_engine)
    async with sessions() as session:
        event = await make_event(session, seats=2, ga_capacity=2)
        await make_room(session, event.event_id, grace_seconds=3600)
        fan_id, other = await make_fans(session, 2)
    now = BEFORE if when == "before the opening" else at(5)
    await _join(sessions, clients[0], event.event_id, other, now)
    places = await asyncio.gather(
        *(_join(sessions, clients[n % len(clients)], event.event_id, fan_id, now) for n in range(60))
    )
    assert len({(p.state, p.position) for p in places}) == 1
    queue, seen, seq = keys(event.event_id)[:3]
    assert await clients[0].zcard(queue) == 2
    assert await clients[0].zcard(seen) == 2
    # One arrival number for the one late place at most (none for a draw).
    assert int(await clients[0].get(seq) or 0) == (0 if when == "before the opening" else 2)


async def test_concurrent_joins_of_many_fans_give_distinct_places(
    race_engine: AsyncEngine, clients: list[Redis]
) -> None:
    sessions = make_sessionmaker(race_engine)
    async with sessions() as session:
        event = await make_event(session, seats=2, ga_capacity=2)
        await make_room(session, event.event_id, grace_seconds=3600)
        fans = await make_fans(session, 120)
    places = await asyncio.gather(
        *(_join(sessions, clients[n % len(clients)], event.event_id, f, at(1)) for n, f in enumerate(fans))
    )
    assert sorted(p.position for p in places if p.position is not None) == list(range(1, 121))


# --- ticks racing ticks ------------------------------------------------------------------

RATE = 600  # ten a second
SECONDS = 20
RACERS = 4
# Credit left over never exceeds this many admissions (queue.CARRY_MS of the rate).
CARRY = max(1, RATE * CARRY_MS // 60_000)


def _allowed(seconds: float) -> int:
    return int(RATE * seconds / 60) + CARRY


async def _race_ticks(
    tick: Callable[[Redis, dt.datetime], Awaitable[int]], clients: list[Redis], seed: int
) -> int:
    """Every simulated second, ``RACERS`` ticks at nearly the same time, each on its own
    connection, in a random order; the fans admitted in all."""
    shuffle = random.Random(seed)
    total = 0
    for second in range(1, SECONDS + 1):
        nows = [at(second + n * 0.01) for n in range(RACERS)]
        shuffle.shuffle(nows)
        total += sum(await asyncio.gather(*(tick(clients[n], now) for n, now in enumerate(nows))))
    return total


async def _waiting_room(race_engine: AsyncEngine, clients: list[Redis], fans: int) -> uuid.UUID:
    sessions = make_sessionmaker(race_engine)
    async with sessions() as session:
        event = await make_event(session, seats=2, ga_capacity=2)
        await make_room(session, event.event_id, rate_per_minute=RATE, grace_seconds=3600)
        ids = await make_fans(session, fans)
    for fan_id in ids:
        await _join(sessions, clients[0], event.event_id, fan_id, BEFORE)
    return event.event_id


async def test_racing_ticks_admit_no_more_than_the_rate(
    race_engine: AsyncEngine, clients: list[Redis]
) -> None:
    event_id = await _waiting_room(race_engine, clients, 400)
    sessions = make_sessionmaker(race_engine)

    async def tick(redis: Redis, now: dt.datetime) -> int:
        return len((await rooms.tick(sessions, redis, event_id, now=now)).admitted)

    admitted = await _race_ticks(tick, clients, seed=7)
    elapsed = SECONDS + (RACERS - 1) * 0.01
    assert admitted <= _allowed(elapsed), admitted
    # And the rate is kept, not starved: within 10% of it.
    assert admitted >= 0.9 * RATE * SECONDS / 60, admitted
    async with sessions() as session:
        distinct = await session.scalar(
            text("SELECT count(DISTINCT fan_id) FROM waiting_room_admissions WHERE event_id = :e"),
            {"e": event_id},
        )
    assert distinct == admitted


async def test_negative_control_a_read_then_write_tick_overadmits(
    race_engine: AsyncEngine, clients: list[Redis]
) -> None:
    event_id = await _waiting_room(race_engine, clients, 400)
    queue, _, _, _, _, meta, _ = keys(event_id)

    async def naive_tick(redis: Redis, now: dt.datetime) -> int:
        # The credit read, then earned and spent in Python, then written back: two daemons
        # reading the same ``last`` both earn the same time.
        now_ms = tokens.to_ms(now)
        last = float(await redis.hget(meta, "naive-last") or tokens.to_ms(at(0)))
        credit = float(await redis.hget(meta, "naive-credit") or 0)
        await asyncio.sleep(0.001)
        credit += RATE * max(0.0, now_ms - last) / 60_000
        taken = await redis.zpopmin(queue, int(credit))
        await redis.hset(meta, mapping={"naive-last": max(now_ms, last), "naive-credit": credit - len(taken)})
        return len(taken)

    admitted = await _race_ticks(naive_tick, clients, seed=7)
    assert admitted > _allowed(SECONDS + (RACERS - 1) * 0.01), admitted


# --- hypothesis: the queue's invariants under any sequence --------------------------------

FANS = 6
MAX_SHOPPERS = 3
MACHINE_RATE = 120  # two a second
WINDOW = 60
GRACE = 30


class Context:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        event_id: uuid.UUID,
        fans: list[uuid.UUID],
    ) -> None:
        self.loop, self.sessions, self.redis, self.event_id, self.fans = loop, sessions, redis, event_id, fans


def build_machine(ctx: Context) -> type[RuleBasedStateMachine]:
    queue_key, _, _, shopping_key, admitting_key, _, _ = keys(ctx.event_id)

    class QueueMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = -30.0  # seconds from the opening
            self.flushes = 0
            ctx.loop.run_until_complete(self._reset())

        async def _reset(self) -> None:
            await ctx.redis.flushdb()
            async with ctx.sessions() as session:
                await session.execute(text("DELETE FROM waiting_room_admissions"))
                await session.commit()

        def _fan_step(self, verb: Callable[[AsyncSession], Awaitable[object]]) -> None:
            async def go() -> None:
                async with ctx.sessions() as session:
                    try:
                        await verb(session)
                        await session.commit()
                    except BookingError:
                        await session.rollback()

            ctx.loop.run_until_complete(go())

        @rule(fan=st.integers(0, FANS - 1))
        def join(self, fan: int) -> None:
            self._fan_step(
                lambda s: rooms.join(
                    s, ctx.redis, ctx.event_id, ctx.fans[fan], signing_key=KEY, now=at(self.clock)
                )
            )

        @rule(fan=st.integers(0, FANS - 1))
        def poll(self, fan: int) -> None:
            self._fan_step(
                lambda s: rooms.position(
                    s, ctx.redis, ctx.event_id, ctx.fans[fan], signing_key=KEY, now=at(self.clock)
                )
            )

        @rule(fan=st.integers(0, FANS - 1))
        def leave(self, fan: int) -> None:
            self._fan_step(
                lambda s: rooms.leave(s, ctx.redis, ctx.event_id, ctx.fans[fan], now=at(self.clock))
            )

        @rule(seconds=st.sampled_from([0.0, 0.3, 1.0, 2.5, 20.0, 45.0]))
        def tick(self, seconds: float) -> None:
            self.clock += seconds
            ctx.loop.run_until_complete(rooms.tick(ctx.sessions, ctx.redis, ctx.event_id, now=at(self.clock)))

        @rule()
        def redis_forgets(self) -> None:
            self.flushes += 1
            ctx.loop.run_until_complete(ctx.redis.flushdb())

        async def _state(self) -> tuple[set[str], set[str], set[str], list[tuple[str, bool]]]:
            queued = {m.decode() for m in await ctx.redis.zrange(queue_key, 0, -1)}
            shopping = {m.decode() for m in await ctx.redis.zrange(shopping_key, 0, -1)}
            admitting = {m.decode() for m in await ctx.redis.hkeys(admitting_key)}
            async with ctx.sessions() as session:
                rows = (
                    await session.execute(
                        text(
                            "SELECT fan_id::text, ended_at IS NULL AND window_ends_at > :now FROM waiting_room_admissions"
                        ),
                        {"now": at(self.clock)},
                    )
                ).all()
            return queued, shopping, admitting, [(fan, bool(live)) for fan, live in rows]

        @invariant()
        def each_fan_is_in_one_place_and_admitted_at_most_once(self) -> None:
            queued, shopping, admitting, rows = ctx.loop.run_until_complete(self._state())
            assert not queued & shopping
            assert not queued & admitting
            assert not shopping & admitting
            recorded = [fan for fan, _ in rows]
            assert len(recorded) == len(set(recorded))
            # Nobody admitted queues again, and whoever Redis shows shopping is on record.
            assert not queued & set(recorded)
            assert shopping <= set(recorded)

        @invariant()
        def admission_stays_within_the_credit_and_the_room(self) -> None:
            _, _, _, rows = ctx.loop.run_until_complete(self._state())
            earned = MACHINE_RATE * max(0.0, self.clock) / 60
            carry = max(1, MACHINE_RATE * CARRY_MS // 60_000)
            # Each time Redis forgets, the next tick may earn up to the carried credit again.
            assert len(rows) <= earned + carry * (1 + self.flushes)
            assert sum(live for _, live in rows) <= MAX_SHOPPERS

    return QueueMachine


def test_queue_invariants_hold_for_any_sequence(database_url: str, redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    engine = make_async_engine(database_url)
    redis = Redis.from_url(redis_url)

    async def prepare() -> Context:
        sessions = make_sessionmaker(engine)
        async with sessions() as session:
            event = await make_event(session, seats=2, ga_capacity=2)
            await make_room(
                session,
                event.event_id,
                rate_per_minute=MACHINE_RATE,
                max_shoppers=MAX_SHOPPERS,
                window_seconds=WINDOW,
                grace_seconds=GRACE,
            )
            fans = await make_fans(session, FANS)
        return Context(loop, sessions, redis, event.event_id, fans)

    try:
        ctx = loop.run_until_complete(prepare())
        run_state_machine_as_test(
            build_machine(ctx),
            settings=settings(
                max_examples=40,
                stateful_step_count=25,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        loop.run_until_complete(redis.aclose())
        loop.run_until_complete(engine.dispose())
        loop.close()
