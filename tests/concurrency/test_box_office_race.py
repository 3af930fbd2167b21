"""Two box-office tills and an online fan race for the same seats, trial after trial: each
starts a sale (or a hold) and pays for it at once. Whatever the interleaving, a seat is sold
at most once, and everyone who was told they hold seats ends up with them: the till's path
goes through the same guarded claim as the fan's.

The negative control drives the tills through a read-then-write claim (test code only) in
the same harness; it must produce buyers who were told the seats were theirs and lost them.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.db import make_async_engine, make_sessionmaker
from booking.errors import BookingError, SeatsTaken
from booking.holds import service as holds
from booking.holds.models import Hold, HoldItem
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.inventory.models import InventoryUnit, UnitState
from booking.payments import box_office, offline
from booking.payments import service as payments
from booking.payments.offline import OfflineGateway
from booking.payments.service import Result
from tests.factories import SmallEvent, make_event, make_fan

TRIALS = 40
SEATS_PER_TRIAL = 3
POLICY = HoldPolicy()
CASH = 10**6  # enough for any sale here


async def widen_race(session: AsyncSession) -> None:
    """Sleep inside the critical section: the claim is done, the transaction still open."""
    await session.execute(text("SELECT pg_sleep(0.003)"))


# claim(session, staff key, event, seats) -> the sale's hold id
TillClaim = Callable[[AsyncSession, uuid.UUID, uuid.UUID, tuple[int, ...]], Awaitable[uuid.UUID]]


async def guarded_till(
    session: AsyncSession, staff_key_id: uuid.UUID, event_id: uuid.UUID, seats: tuple[int, ...]
) -> uuid.UUID:
    view = await box_office.start_sale(
        session,
        staff_key_id=staff_key_id,
        event_id=event_id,
        selection=SeatSelection(seats),
        policy=POLICY,
        inside_claim=widen_race,
    )
    return view.id


async def unguarded_till(
    session: AsyncSession, staff_key_id: uuid.UUID, event_id: uuid.UUID, seats: tuple[int, ...]
) -> uuid.UUID:
    """The bug this test exists to catch: read which seats are free, then take them without a
    guard. The sale is otherwise complete (hold, units, price snapshot), so the real
    ``take_payment`` can try to sell it."""
    free = (
        await session.execute(
            select(InventoryUnit.id, InventoryUnit.price_tier_id).where(
                InventoryUnit.event_id == event_id,
                InventoryUnit.seat_id.in_(seats),
                InventoryUnit.state == UnitState.AVAILABLE,
            )
        )
    ).all()
    if len(free) < len(seats):
        raise SeatsTaken(list(seats))
    hold_id = await session.scalar(
        insert(Hold)
        .values(
            event_id=event_id,
            staff_key_id=staff_key_id,
            quantity=len(seats),
            total_minor=0,
            currency="GBP",
            expires_at=func.now() + POLICY.ttl,
        )
        .returning(Hold.id)
    )
    assert hold_id is not None
    await widen_race(session)
    await session.execute(
        update(InventoryUnit)
        .where(InventoryUnit.id.in_([unit for unit, _ in free]))
        .values(state=UnitState.HELD, hold_id=hold_id, held_until=func.now() + POLICY.ttl)
    )
    await session.execute(
        insert(HoldItem),
        [
            {
                "hold_id": hold_id,
                "unit_id": unit,
                "price_tier_id": tier,
                "price_minor": 5000,
                "currency": "GBP",
            }
            for unit, tier in free
        ],
    )
    return hold_id


@dataclass(frozen=True)
class Outcome:
    who: str
    seats: tuple[int, ...]
    # Set when the buyer was told the seats were theirs to pay for.
    hold_id: uuid.UUID | None = None
    # Set when the payment ended in an order.
    order_id: uuid.UUID | None = None


@dataclass
class Arena:
    sessions: async_sessionmaker[AsyncSession]
    gateway: OfflineGateway
    event: SmallEvent
    tills: list[uuid.UUID]


@pytest.fixture
async def race_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_async_engine(database_url, pool_size=10)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _arena(engine: AsyncEngine, trials: int) -> Arena:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        event = await make_event(session, seats=trials * SEATS_PER_TRIAL, ga_capacity=1)
        tills = [
            (await create_key(session, f"till-{n}-{uuid.uuid4().hex[:6]}", StaffRole.BOX_OFFICE)).id
            for n in range(2)
        ]
        await session.commit()
    return Arena(sessions, OfflineGateway(sessions), event, tills)


async def _till_buys(
    arena: Arena,
    staff_key_id: uuid.UUID,
    seats: tuple[int, ...],
    claim: TillClaim,
    delay: float,
    tolerate_db_errors: bool,
) -> Outcome:
    await asyncio.sleep(delay)
    who = f"till {staff_key_id}"
    async with arena.sessions() as session:
        try:
            hold_id = await claim(session, staff_key_id, arena.event.event_id, seats)
            await session.commit()
        except BookingError:
            return Outcome(who, seats)
        except DBAPIError:
            if not tolerate_db_errors:
                raise
            return Outcome(who, seats)
    async with arena.sessions() as session:
        try:
            paid = await box_office.take_payment(
                session, hold_id=hold_id, staff_key_id=staff_key_id, method="cash", tendered_minor=CASH
            )
            await session.commit()
        except BookingError:
            return Outcome(who, seats, hold_id)
        except DBAPIError:
            if not tolerate_db_errors:
                raise
            return Outcome(who, seats, hold_id)
    return Outcome(who, seats, hold_id, paid.order.id)


async def _fan_buys(arena: Arena, seats: tuple[int, ...], delay: float) -> Outcome:
    await asyncio.sleep(delay)
    async with arena.sessions() as session:
        owner = Owner(fan_id=await make_fan(session))
        try:
            view = await holds.create_hold(
                session,
                owner=owner,
                event_id=arena.event.event_id,
                selection=SeatSelection(seats),
                policy=POLICY,
                inside_claim=widen_race,
            )
            await session.commit()
        except BookingError:
            return Outcome("fan", seats)
    try:
        settled = await payments.checkout(
            arena.sessions,
            gateway=arena.gateway,
            owner=owner,
            hold_id=view.id,
            method={"card_number": offline.SUCCESS},
            policy=POLICY,
        )
    except BookingError:
        # Its seats were taken from under its live hold (only a broken claim does that).
        return Outcome("fan", seats, view.id)
    order_id = settled.order_id if settled.result == Result.CONFIRMED else None
    return Outcome("fan", seats, view.id, order_id)


async def _trial(
    arena: Arena, seats: list[int], rng: random.Random, claim: TillClaim, tolerate_db_errors: bool
) -> list[Outcome]:
    def pick() -> tuple[int, ...]:
        return tuple(sorted(rng.sample(seats, rng.randint(1, 2))))

    return list(
        await asyncio.gather(
            *(
                _till_buys(arena, till, pick(), claim, rng.uniform(0, 0.005), tolerate_db_errors)
                for till in arena.tills
            ),
            _fan_buys(arena, pick(), rng.uniform(0, 0.005)),
        )
    )


async def _violations(arena: Arena, seats: list[int], outcomes: list[Outcome]) -> list[str]:
    """What a correct sale never shows: a buyer told the seats were theirs who did not get
    them, a seat in two orders, or a sale the table does not back."""
    problems = []
    for outcome in outcomes:
        # Every hold here is live for minutes: nobody may take its seats meanwhile.
        if outcome.hold_id is not None and outcome.order_id is None:
            problems.append(f"{outcome.who} was told {outcome.seats} were held, then lost them")
    sold_to: dict[int, uuid.UUID] = {}
    for outcome in outcomes:
        if outcome.order_id is None:
            continue
        for seat in outcome.seats:
            if seat in sold_to:
                problems.append(f"seat {seat} sold to {sold_to[seat]} and {outcome.order_id}")
            sold_to[seat] = outcome.order_id
    async with arena.sessions() as session:
        rows = (
            await session.execute(
                select(InventoryUnit.seat_id, InventoryUnit.state, InventoryUnit.order_id).where(
                    InventoryUnit.event_id == arena.event.event_id, InventoryUnit.seat_id.in_(seats)
                )
            )
        ).all()
    for seat_id, state, order_id in rows:
        assert seat_id is not None
        if seat_id in sold_to and (state != UnitState.SOLD or order_id != sold_to[seat_id]):
            problems.append(
                f"seat {seat_id} was sold to {sold_to[seat_id]}, the table says {state} {order_id}"
            )
        if seat_id not in sold_to and state == UnitState.SOLD:
            problems.append(f"seat {seat_id} is sold to {order_id}, which no buyer was told about")
    return problems


async def _totals_hold(arena: Arena) -> None:
    """Across every trial: a unit in at most one active order line, and every payment taken
    (cash or card) backed by an order."""
    async with arena.sessions() as session:
        twice = await session.scalar(
            text(
                "SELECT count(*) FROM (SELECT unit_id FROM order_items WHERE state = 'active'"
                " GROUP BY unit_id HAVING count(*) > 1) d"
            )
        )
        orphaned = await session.scalar(
            text("SELECT count(*) FROM payments WHERE state = 'succeeded' AND order_id IS NULL")
        )
    assert (twice, orphaned) == (0, 0)


async def test_two_tills_and_a_fan_never_get_the_same_seat(race_engine: AsyncEngine) -> None:
    arena = await _arena(race_engine, TRIALS)
    rng = random.Random(20261128)
    refused = paid = 0
    for trial in range(TRIALS):
        seats = arena.event.seat_ids[trial * SEATS_PER_TRIAL : (trial + 1) * SEATS_PER_TRIAL]
        outcomes = await _trial(arena, seats, rng, guarded_till, tolerate_db_errors=False)
        assert await _violations(arena, seats, outcomes) == [], f"trial {trial}: {outcomes}"
        refused += sum(outcome.hold_id is None for outcome in outcomes)
        paid += sum(outcome.order_id is not None for outcome in outcomes)
    await _totals_hold(arena)
    # The trials did race: some buyers were turned away, and tills and fans both sold.
    assert refused > 0
    assert paid > TRIALS
    async with arena.sessions() as session:
        channels = set((await session.scalars(text("SELECT DISTINCT channel FROM orders"))).all())
    assert channels == {"online", "box_office"}


async def test_negative_control_an_unguarded_till_claim_is_caught(race_engine: AsyncEngine) -> None:
    trials = 15
    arena = await _arena(race_engine, trials)
    rng = random.Random(20261128)
    found: list[str] = []
    for trial in range(trials):
        seats = arena.event.seat_ids[trial * SEATS_PER_TRIAL : (trial + 1) * SEATS_PER_TRIAL]
        outcomes = await _trial(arena, seats, rng, unguarded_till, tolerate_db_errors=True)
        found += await _violations(arena, seats, outcomes)
    assert found, "the unguarded till claim went unnoticed: this race test cannot see a broken guard"
