"""Promise 1 under fire: many buyers race for the same seats and GA places.

Each race has a negative control: the same harness driving a read-then-write claim (test code
only) must oversell, which proves the checks would catch a broken guard.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.db import make_async_engine, make_sessionmaker
from booking.errors import BookingError, SoldOut
from booking.holds import service as holds
from booking.holds.models import Hold
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection
from booking.inventory.models import InventoryUnit, UnitState
from tests.factories import make_event

CLIENTS = 200
ROUNDS = 20
SEATS = 50
POLICY = HoldPolicy(tickets_per_fan=8)


async def widen_race(session: AsyncSession) -> None:
    """Sleep inside the critical section: the claim is done, the transaction still open."""
    await session.execute(text("SELECT pg_sleep(0.003)"))


# attempt(session, owner, event, request) -> (hold_id, number of units) or None
Attempt = Callable[[AsyncSession, Owner, uuid.UUID, object], Awaitable[tuple[uuid.UUID, int] | None]]


@dataclass
class Race:
    sessions: async_sessionmaker[AsyncSession]
    event_id: uuid.UUID
    owners: list[Owner]


@pytest.fixture
async def race_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    # Most of the embedded server's 100 connections; the other clients queue for one, as
    # they would behind any connection pooler.
    engine = make_async_engine(database_url, pool_size=80, max_overflow=0, pool_timeout=120)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _setup(
    engine: AsyncEngine, *, seats: int, ga: int, clients: int
) -> tuple[Race, list[int], uuid.UUID]:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        event = await make_event(session, seats=seats, ga_capacity=ga)
        fan_ids = (
            await session.scalars(
                text(
                    "INSERT INTO fans (email, password_hash) SELECT 'racer' || n || '@example.org', 'x'"
                    " FROM generate_series(1, :n) n RETURNING id"
                ),
                {"n": clients},
            )
        ).all()
        await session.commit()
    return (
        Race(sessions, event.event_id, [Owner(fan_id=f) for f in fan_ids]),
        event.seat_ids,
        event.ga_tier_id,
    )


async def _reset(race: Race) -> None:
    async with race.sessions() as session:
        await session.execute(
            text("UPDATE inventory_units SET state = 'available', hold_id = NULL, held_until = NULL")
        )
        for table in ("hold_items", "outbox", "holds"):
            await session.execute(text(f"DELETE FROM {table}"))
        await session.commit()


async def _run_round(
    race: Race, attempt: Attempt, requests: list[object], *, tolerate_db_errors: bool = False
) -> list[tuple[uuid.UUID, int]]:
    """Every client at once; returns the winners. A database error (deadlock, lock timeout)
    fails the test unless tolerated: only the broken claims of the negative controls hit them."""

    async def client(owner: Owner, request: object) -> tuple[uuid.UUID, int] | None:
        async with race.sessions() as session:
            try:
                won = await attempt(session, owner, race.event_id, request)
                await session.commit()
                return won
            except BookingError:
                await session.rollback()
                return None
            except DBAPIError:
                if not tolerate_db_errors:
                    raise
                await session.rollback()
                return None

    results = await asyncio.gather(*(client(o, r) for o, r in zip(race.owners, requests, strict=True)))
    return [result for result in results if result is not None]


async def _violations(race: Race, winners: list[tuple[uuid.UUID, int]], capacity: int) -> list[str]:
    """What a correct inventory never shows: a success not backed by its rows, or more held
    than exists."""
    problems = []
    async with race.sessions() as session:
        for hold_id, count in winners:
            backed = await session.scalar(
                select(func.count())
                .select_from(InventoryUnit)
                .where(InventoryUnit.hold_id == hold_id, InventoryUnit.state == UnitState.HELD)
            )
            if backed != count:
                problems.append(f"hold {hold_id} was told it got {count} units, the table backs {backed}")
        held = await session.scalar(
            select(func.count()).select_from(InventoryUnit).where(InventoryUnit.state != UnitState.AVAILABLE)
        )
    promised = sum(count for _, count in winners)
    if promised > capacity:
        problems.append(f"{promised} units promised out of {capacity}")
    if held != promised:
        problems.append(f"{held} units held, {promised} promised")
    return problems


async def guarded_seats(
    session: AsyncSession, owner: Owner, event_id: uuid.UUID, request: object
) -> tuple[uuid.UUID, int]:
    seats = request
    assert isinstance(seats, tuple)
    view = await holds.create_hold(
        session,
        owner=owner,
        event_id=event_id,
        selection=SeatSelection(seats),
        policy=POLICY,
        inside_claim=widen_race,
    )
    return view.id, len(view.items)


async def _bare_hold(session: AsyncSession, owner: Owner, event_id: uuid.UUID, quantity: int) -> uuid.UUID:
    hold_id = await session.scalar(
        insert(Hold)
        .values(
            event_id=event_id,
            fan_id=owner.fan_id,
            quantity=quantity,
            total_minor=0,
            currency="GBP",
            expires_at=func.now() + dt.timedelta(minutes=8),
        )
        .returning(Hold.id)
    )
    assert hold_id is not None
    return hold_id


async def unguarded_seats(
    session: AsyncSession, owner: Owner, event_id: uuid.UUID, request: object
) -> tuple[uuid.UUID, int]:
    """The bug this suite exists to catch: read availability, then write without a guard."""
    seats = request
    assert isinstance(seats, tuple)
    free = (
        await session.scalars(
            select(InventoryUnit.id).where(
                InventoryUnit.event_id == event_id,
                InventoryUnit.seat_id.in_(seats),
                InventoryUnit.state == UnitState.AVAILABLE,
            )
        )
    ).all()
    if len(free) < len(seats):
        raise BookingError("taken")
    hold_id = await _bare_hold(session, owner, event_id, len(seats))
    await widen_race(session)
    await session.execute(
        update(InventoryUnit)
        .where(InventoryUnit.id.in_(free))
        .values(state=UnitState.HELD, hold_id=hold_id, held_until=func.now() + dt.timedelta(minutes=8))
    )
    return hold_id, len(seats)


def _seat_requests(rng: random.Random, seat_ids: list[int]) -> list[object]:
    return [tuple(rng.sample(seat_ids, rng.randint(1, 4))) for _ in range(CLIENTS)]


async def test_seat_race_never_sells_a_seat_twice(race_engine: AsyncEngine) -> None:
    race, seat_ids, _ = await _setup(race_engine, seats=SEATS, ga=1, clients=CLIENTS)
    rng = random.Random(20261128)
    for round_no in range(ROUNDS):
        await _reset(race)
        winners = await _run_round(race, guarded_seats, _seat_requests(rng, seat_ids))
        assert winners, f"round {round_no}: nobody got a seat"
        assert await _violations(race, winners, capacity=SEATS) == [], f"round {round_no}"


async def test_negative_control_read_then_write_oversells_seats(race_engine: AsyncEngine) -> None:
    race, seat_ids, _ = await _setup(race_engine, seats=SEATS, ga=1, clients=CLIENTS)
    rng = random.Random(20261128)
    found = []
    for _ in range(3):
        await _reset(race)
        winners = await _run_round(
            race, unguarded_seats, _seat_requests(rng, seat_ids), tolerate_db_errors=True
        )
        found += await _violations(race, winners, capacity=SEATS)
    assert found, "the unguarded claim did not oversell: this race test cannot see a broken guard"


GA_CLIENTS = 500
GA_CAPACITY = 1000


async def guarded_ga(
    session: AsyncSession, owner: Owner, event_id: uuid.UUID, request: object
) -> tuple[uuid.UUID, int]:
    tier_id, quantity = request  # type: ignore[misc]
    view = await holds.create_hold(
        session,
        owner=owner,
        event_id=event_id,
        selection=GASelection(tier_id, quantity),
        policy=POLICY,
        inside_claim=widen_race,
    )
    return view.id, len(view.items)


async def unguarded_ga(
    session: AsyncSession, owner: Owner, event_id: uuid.UUID, request: object
) -> tuple[uuid.UUID, int]:
    tier_id, quantity = request  # type: ignore[misc]
    free = (
        await session.scalars(
            select(InventoryUnit.id)
            .where(InventoryUnit.price_tier_id == tier_id, InventoryUnit.state == UnitState.AVAILABLE)
            .limit(quantity)
        )
    ).all()
    if len(free) < quantity:
        raise BookingError("sold out")
    hold_id = await _bare_hold(session, owner, event_id, quantity)
    await widen_race(session)
    await session.execute(
        update(InventoryUnit)
        .where(InventoryUnit.id.in_(free))
        .values(state=UnitState.HELD, hold_id=hold_id, held_until=func.now() + dt.timedelta(minutes=8))
    )
    return hold_id, quantity


async def test_ga_race_never_exceeds_capacity_and_sold_out_fails_fast(race_engine: AsyncEngine) -> None:
    race, _, tier_id = await _setup(race_engine, seats=1, ga=GA_CAPACITY, clients=GA_CLIENTS + 1)
    rng = random.Random(7)
    racers = Race(race.sessions, race.event_id, race.owners[:GA_CLIENTS])
    requests: list[object] = [(tier_id, rng.randint(1, 4)) for _ in range(GA_CLIENTS)]
    winners = await _run_round(racers, guarded_ga, requests)
    assert await _violations(racers, winners, capacity=GA_CAPACITY + 1) == []
    taken = sum(count for _, count in winners)
    assert taken <= GA_CAPACITY
    assert sum(q for _, q in requests) > GA_CAPACITY  # demand exceeded supply: it sold out
    # Sold out: the last buyer is told so at once, not after waiting on locks.
    async with race.sessions() as session:
        remaining = GA_CAPACITY - taken
        if remaining:
            await holds.create_hold(
                session,
                owner=race.owners[-1],
                event_id=race.event_id,
                selection=GASelection(tier_id, remaining),
                policy=HoldPolicy(tickets_per_fan=GA_CAPACITY),
            )
            await session.commit()
        with pytest.raises(SoldOut):
            await holds.create_hold(
                session,
                owner=race.owners[-2],
                event_id=race.event_id,
                selection=GASelection(tier_id, 1),
                policy=POLICY,
            )


async def test_negative_control_unlocked_ga_pick_oversells(race_engine: AsyncEngine) -> None:
    race, _, tier_id = await _setup(race_engine, seats=1, ga=GA_CAPACITY, clients=GA_CLIENTS)
    rng = random.Random(7)
    requests: list[object] = [(tier_id, rng.randint(1, 4)) for _ in range(GA_CLIENTS)]
    winners = await _run_round(race, unguarded_ga, requests, tolerate_db_errors=True)
    assert await _violations(race, winners, capacity=GA_CAPACITY + 1) != []


async def test_one_fan_racing_themself_stops_at_the_cap(race_engine: AsyncEngine) -> None:
    race, _, tier_id = await _setup(race_engine, seats=1, ga=100, clients=1)
    one_fan = Race(race.sessions, race.event_id, race.owners * 30)
    winners = await _run_round(one_fan, guarded_ga, [(tier_id, 1)] * 30)
    assert len(winners) == POLICY.tickets_per_fan
