"""On-call operations against the real database: finding and releasing holds, stuck payments
and their reconciliation, staff refunds, pausing a sale (with its race), the dashboard."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.catalog.models import Event, EventStatus
from booking.catalog.search import EVENT_CHANGED
from booking.db import make_sessionmaker
from booking.errors import (
    EventNotFound,
    HoldAlreadyEnded,
    HoldBeingPaid,
    HoldNotFound,
    HoldStateConflict,
    InvalidRequest,
    NothingToReconcile,
    OrderNotFound,
    OrderNotRefundable,
    PaymentProviderUnavailable,
    PaymentProviderUnreachable,
    SaleNotOpen,
    SaleStateConflict,
)
from booking.holds import service as holds
from booking.holds.models import HoldState
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.ops import reads
from booking.ops import service as ops
from booking.outbox import OutboxMessage, emit
from booking.payments import offline
from booking.payments import service as payments
from booking.payments.registry import Gateways
from booking.payments.service import Result
from booking.settings import Settings
from tests.factories import SmallEvent, advance_clock, make_event, make_fan

POLICY = HoldPolicy()


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=8, ga_capacity=4)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
def gateways(sessions: async_sessionmaker[AsyncSession]) -> Gateways:
    return Gateways(Settings(offline_payments=True, stripe_secret_key=None), sessions)


async def _hold(
    session: AsyncSession, event: SmallEvent, seats: list[int], *, email: str | None = None
) -> tuple[Owner, uuid.UUID]:
    owner = Owner(fan_id=await make_fan(session, email))
    view = await holds.create_hold(
        session, owner=owner, event_id=event.event_id, selection=SeatSelection(tuple(seats)), policy=POLICY
    )
    await session.commit()
    return owner, view.id


async def _pay(
    sessions: async_sessionmaker[AsyncSession],
    gateways: Gateways,
    owner: Owner,
    hold_id: uuid.UUID,
    card: str,
) -> payments.Settlement:
    return await payments.checkout(
        sessions,
        gateway=gateways.get("offline"),
        owner=owner,
        hold_id=hold_id,
        method={"card_number": card},
        policy=POLICY,
    )


async def _scalar(session: AsyncSession, sql: str, **params: object) -> Any:
    value = await session.scalar(text(sql), params)
    await session.commit()
    return value


# --- holds -------------------------------------------------------------------------------


async def test_find_holds_by_each_filter_newest_first(session: AsyncSession, event: SmallEvent) -> None:
    other = await make_event(session, seats=2, ga_capacity=1)
    _, first = await _hold(session, event, event.seat_ids[:2], email="Ann@Example.org")
    _, second = await _hold(session, event, event.seat_ids[2:3])
    _, elsewhere = await _hold(session, other, other.seat_ids[:1])
    till = await create_key(session, "till-1", StaffRole.BOX_OFFICE)
    staff_hold = await holds.create_hold(
        session,
        owner=Owner(staff_key_id=till.id),
        event_id=event.event_id,
        selection=SeatSelection((event.seat_ids[3],)),
        policy=POLICY,
    )
    await session.commit()

    everything = await reads.find_holds(session)
    assert [row.hold_id for row in everything] == [staff_hold.id, elsewhere, second, first]
    by_event = await reads.find_holds(session, event_id=event.event_id)
    assert {row.hold_id for row in by_event} == {first, second, staff_hold.id}
    (ann,) = await reads.find_holds(session, fan_email="ann@example.ORG")
    assert (ann.hold_id, ann.owner_kind, ann.owner, ann.quantity) == (first, "fan", "Ann@Example.org", 2)
    assert ann.event_title == "Test Night"
    assert (ann.total_minor, ann.currency, ann.state) == (10000, "GBP", HoldState.ACTIVE)
    assert ann.seconds_left is not None
    assert 0 < ann.seconds_left <= POLICY.ttl.total_seconds()
    assert not ann.overdue
    (staff,) = await reads.find_holds(session, hold_id=staff_hold.id)
    assert (staff.owner_kind, staff.owner) == ("staff", "till-1")
    assert await reads.find_holds(session, expired_only=True) == []
    assert len(await reads.find_holds(session, limit=2)) == 2
    with pytest.raises(InvalidRequest):
        await reads.find_holds(session, limit=0)

    await session.commit()
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    expired = await reads.find_holds(session, expired_only=True, event_id=event.event_id)
    assert {row.hold_id for row in expired} == {first, second, staff_hold.id}
    assert all(row.overdue and row.seconds_left == 0 for row in expired)
    await holds.release_hold(session, hold_id=second)
    await session.commit()
    (released,) = await reads.find_holds(session, state=HoldState.RELEASED)
    assert (released.hold_id, released.seconds_left, released.overdue) == (second, None, False)


async def test_staff_release_any_hold_but_not_twice_and_not_while_paying(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateways: Gateways,
    event: SmallEvent,
) -> None:
    _, hold_id = await _hold(session, event, event.seat_ids[:2])
    view = await ops.release_hold_by_staff(session, hold_id)
    await session.commit()
    assert view.state == HoldState.RELEASED
    held = "SELECT count(*) FROM inventory_units WHERE state = 'held'"
    assert await _scalar(session, held) == 0
    with pytest.raises(HoldAlreadyEnded):
        await ops.release_hold_by_staff(session, hold_id)
    await session.rollback()

    payer, paying = await _hold(session, event, event.seat_ids[2:3])
    assert (await _pay(sessions, gateways, payer, paying, offline.LATE_SUCCESS)).result == Result.PENDING
    with pytest.raises(HoldBeingPaid):
        await ops.release_hold_by_staff(session, paying)
    await session.rollback()
    assert await _scalar(session, held) == 1

    buyer, bought = await _hold(session, event, event.seat_ids[3:4])
    assert (await _pay(sessions, gateways, buyer, bought, offline.SUCCESS)).result == Result.CONFIRMED
    with pytest.raises(HoldStateConflict):
        await ops.release_hold_by_staff(session, bought)
    await session.rollback()

    decliner, declined = await _hold(session, event, event.seat_ids[4:5])
    assert (await _pay(sessions, gateways, decliner, declined, offline.DECLINED)).result == Result.FAILED
    assert (await ops.release_hold_by_staff(session, declined)).state == HoldState.RELEASED
    await session.commit()

    with pytest.raises(HoldNotFound):
        await ops.release_hold_by_staff(session, uuid.uuid4())


async def test_release_expired_per_event_then_everywhere(session: AsyncSession, event: SmallEvent) -> None:
    other = await make_event(session, seats=2, ga_capacity=1)
    await _hold(session, event, event.seat_ids[:1])
    await _hold(session, event, event.seat_ids[1:2])
    await _hold(session, other, other.seat_ids[:1])
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    _, live = await _hold(session, event, event.seat_ids[2:3])

    assert await ops.release_expired(session, event.event_id) == 2
    await session.commit()
    assert len(await reads.find_holds(session, expired_only=True)) == 1
    assert await ops.release_expired(session) == 1
    await session.commit()
    assert await ops.release_expired(session) == 0
    await session.commit()
    states = dict((await session.execute(text("SELECT id, state FROM holds"))).all())
    await session.commit()
    assert sorted(states.values()) == ["active", "expired", "expired", "expired"]
    assert states[live] == "active"
    with pytest.raises(EventNotFound):
        await ops.release_expired(session, uuid.uuid4())


# --- stuck orders ------------------------------------------------------------------------


async def test_a_stuck_payment_is_listed_and_reconciled_on_demand(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateways: Gateways,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:2], email="late@example.org")
    timed_out = await _pay(sessions, gateways, owner, hold_id, offline.TIMEOUT)
    assert timed_out.result == Result.PENDING
    assert await reads.stuck_orders(session) == []  # pending for moments only
    await session.commit()
    (fresh,) = await reads.stuck_orders(session, older_than=dt.timedelta(0))
    await session.commit()
    assert (fresh.hold_id, fresh.payment_id, fresh.overdue) == (hold_id, timed_out.payment_id, False)
    assert (fresh.buyer, fresh.event_title, fresh.amount_minor, fresh.currency) == (
        "late@example.org",
        "Test Night",
        10000,
        "GBP",
    )
    assert (fresh.provider, fresh.payment_state, fresh.hold_state) == ("offline", "pending", HoldState.PAYING)

    await advance_clock(session, POLICY.payment_grace.total_seconds() + 1)
    (stuck,) = await reads.stuck_orders(session)
    await session.commit()
    assert stuck.overdue

    settled = await ops.reconcile_order(sessions, gateways, hold_id)
    assert settled.result == Result.CONFIRMED
    assert settled.order_id is not None
    assert await reads.stuck_orders(session, older_than=dt.timedelta(0)) == []
    await session.commit()
    with pytest.raises(NothingToReconcile, match="already succeeded"):
        await ops.reconcile_order(sessions, gateways, hold_id)
    with pytest.raises(HoldNotFound):
        await ops.reconcile_order(sessions, gateways, uuid.uuid4())
    _, unpaid = await _hold(session, event, event.seat_ids[2:3])
    with pytest.raises(NothingToReconcile, match="no payment"):
        await ops.reconcile_order(sessions, gateways, unpaid)


async def test_reconcile_reports_a_provider_that_is_away_or_not_offered(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateways: Gateways,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:1])
    assert (await _pay(sessions, gateways, owner, hold_id, offline.LATE_SUCCESS)).result == Result.PENDING
    # The provider loses its record: asking about the payment is an error, not an answer.
    await session.execute(text("DELETE FROM offline_gateway_payments"))
    await session.commit()
    with pytest.raises(PaymentProviderUnreachable):
        await ops.reconcile_order(sessions, gateways, hold_id)
    assert await _scalar(session, "SELECT state FROM payments") == "pending"

    without_offline = Gateways(Settings(offline_payments=False, stripe_secret_key=None), sessions)
    with pytest.raises(PaymentProviderUnavailable):
        await ops.reconcile_order(sessions, without_offline, hold_id)
    await session.execute(text("UPDATE payments SET created_at = now() - interval '1 hour'"))
    await session.commit()
    (report,) = await ops.reconcile_stuck(sessions, without_offline)
    assert report.hold_id == hold_id
    assert report.settlement is None
    assert report.error is not None
    assert "PaymentProviderUnavailable" in report.error


async def test_reconcile_stuck_settles_every_one(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateways: Gateways,
    event: SmallEvent,
) -> None:
    paid = []
    for seat in event.seat_ids[:3]:
        owner, hold_id = await _hold(session, event, [seat])
        await _pay(sessions, gateways, owner, hold_id, offline.LATE_SUCCESS)
        paid.append(hold_id)
    await advance_clock(session, POLICY.payment_grace.total_seconds() + 1)
    done = await ops.reconcile_stuck(sessions, gateways)
    assert sorted(r.hold_id for r in done) == sorted(paid)
    assert all(r.settlement is not None and r.settlement.result == Result.CONFIRMED for r in done)
    assert await ops.reconcile_stuck(sessions, gateways) == []


# --- refunds -----------------------------------------------------------------------------


async def test_staff_refund_needs_no_cutoff_and_happens_once(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateways: Gateways,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:2])
    order_id = (await _pay(sessions, gateways, owner, hold_id, offline.SUCCESS)).order_id
    assert order_id is not None
    # The event has started: a fan could no longer cancel, staff still refund.
    await session.execute(
        update(Event).where(Event.id == event.event_id).values(starts_at=dt.datetime.now(dt.UTC))
    )
    await session.commit()

    refunded = await ops.refund_order_by_staff(session, order_id)
    await session.commit()
    assert refunded.order.state == "refunded"
    assert refunded.refund_recorded
    assert {line.state for line in refunded.order.lines} == {"refunded"}
    assert await _scalar(session, "SELECT count(*) FROM inventory_units WHERE state = 'sold'") == 0
    assert await _scalar(session, "SELECT count(*) FROM tickets WHERE state = 'valid'") == 0
    assert await _scalar(session, "SELECT count(*) FROM refunds") == 1
    with pytest.raises(OrderNotRefundable):
        await ops.refund_order_by_staff(session, order_id)
    await session.rollback()
    with pytest.raises(OrderNotFound):
        await ops.refund_order_by_staff(session, uuid.uuid4())
    assert await _scalar(session, "SELECT count(*) FROM refunds") == 1


# --- pausing a sale ----------------------------------------------------------------------


async def test_pause_stops_new_holds_but_live_holds_may_still_be_paid(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateways: Gateways,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:1])
    change = await ops.pause_sale(session, event.event_id)
    await session.commit()
    assert (change.previous, change.status, change.title) == (
        EventStatus.ON_SALE,
        EventStatus.PAUSED,
        "Test Night",
    )
    (fact,) = (await session.scalars(select(OutboxMessage).where(OutboxMessage.topic == EVENT_CHANGED))).all()
    await session.commit()
    assert fact.payload == {"event_id": str(event.event_id), "status": "paused", "previous": "on_sale"}
    assert fact.catalog_event_id == event.event_id

    with pytest.raises(SaleNotOpen):
        await _hold(session, event, event.seat_ids[1:2])
    await session.rollback()
    assert (await _pay(sessions, gateways, owner, hold_id, offline.SUCCESS)).result == Result.CONFIRMED

    with pytest.raises(SaleStateConflict, match="paused"):
        await ops.pause_sale(session, event.event_id)
    await session.rollback()
    assert (await ops.resume_sale(session, event.event_id)).status == EventStatus.ON_SALE
    await session.commit()
    await _hold(session, event, event.seat_ids[1:2])
    with pytest.raises(SaleStateConflict, match="on_sale"):
        await ops.resume_sale(session, event.event_id)
    await session.rollback()
    with pytest.raises(EventNotFound):
        await ops.pause_sale(session, uuid.uuid4())
    await session.rollback()
    await session.execute(update(Event).where(Event.id == event.event_id).values(status=EventStatus.DRAFT))
    await session.commit()
    with pytest.raises(SaleStateConflict, match="draft"):
        await ops.pause_sale(session, event.event_id)


async def test_resolve_event_by_id_or_slug(session: AsyncSession, event: SmallEvent) -> None:
    slug = await session.scalar(select(Event.slug).where(Event.id == event.event_id))
    assert slug is not None
    assert await reads.resolve_event(session, slug) == event.event_id
    assert await reads.resolve_event(session, str(event.event_id)) == event.event_id
    for ref in ("no-such-event", str(uuid.uuid4())):
        with pytest.raises(EventNotFound):
            await reads.resolve_event(session, ref)


Pause = Callable[[AsyncSession, uuid.UUID], Awaitable[object]]


async def _read_then_write_pause(session: AsyncSession, event_id: uuid.UUID) -> object:
    """A broken pause (test code only): it checks the status, then writes without the guard."""
    status = await session.scalar(select(Event.status).where(Event.id == event_id))
    await session.execute(text("SELECT pg_sleep(0.2)"))
    if status != EventStatus.ON_SALE:
        raise SaleStateConflict()
    await session.execute(update(Event).where(Event.id == event_id).values(status=EventStatus.PAUSED))
    await emit(session, EVENT_CHANGED, {"event_id": str(event_id)}, catalog_event_id=event_id)
    return None


async def _pause_race(
    sessions: async_sessionmaker[AsyncSession], event_id: uuid.UUID, pause: Pause, operators: int
) -> tuple[int, int]:
    """Every operator pauses at once; returns how many were told they paused it, and how many
    pause facts reached the outbox."""

    async def operator() -> bool:
        async with sessions() as session:
            try:
                await pause(session, event_id)
                await session.execute(text("SELECT pg_sleep(0.01)"))  # widen the window
                await session.commit()
                return True
            except SaleStateConflict:
                await session.rollback()
                return False

    won = sum(await asyncio.gather(*(operator() for _ in range(operators))))
    async with sessions() as session:
        facts = await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.topic == EVENT_CHANGED)
        )
    return won, int(facts or 0)


async def test_concurrent_pauses_one_wins_and_a_read_then_write_pause_would_not(
    sessions: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    guarded = await make_event(session, seats=1, ga_capacity=1)
    assert await _pause_race(sessions, guarded.event_id, ops.pause_sale, operators=8) == (1, 1)

    # Negative control: the same race against a check-then-write pause is caught.
    await session.execute(text("DELETE FROM outbox"))
    await session.commit()
    broken = await make_event(session, seats=1, ga_capacity=1)
    won, facts = await _pause_race(sessions, broken.event_id, _read_then_write_pause, operators=8)
    assert won > 1
    assert facts > 1


# --- dashboard ---------------------------------------------------------------------------


async def test_dashboard_numbers_in_a_fixed_number_of_statements(
    engine: AsyncEngine,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateways: Gateways,
    event: SmallEvent,
) -> None:
    paused = await make_event(session, seats=3, ga_capacity=1)
    ended = await make_event(session, seats=1, ga_capacity=1)
    draft = await make_event(session, seats=1, ga_capacity=1)
    await session.execute(
        text(
            "UPDATE events SET starts_at = now() - interval '3 hours', ends_at = now() - interval '1 hour',"
            " onsale_starts_at = now() - interval '2 days', onsale_ends_at = now() - interval '1 hour'"
            " WHERE id = :e"
        ),
        {"e": ended.event_id},
    )
    await session.execute(update(Event).where(Event.id == draft.event_id).values(status=EventStatus.DRAFT))
    await session.commit()

    buyer, bought = await _hold(session, event, event.seat_ids[:2])
    await _pay(sessions, gateways, buyer, bought, offline.SUCCESS)  # 2 sold, 10000 GBP
    payer, paying = await _hold(session, event, event.seat_ids[2:3])
    await _pay(sessions, gateways, payer, paying, offline.LATE_SUCCESS)
    await _hold(session, event, event.seat_ids[3:5])
    await advance_clock(session, POLICY.ttl.total_seconds() - 30)  # the active hold: 30 s left
    await session.execute(
        text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :h"), {"h": paying}
    )
    await session.execute(
        text("UPDATE inventory_units SET held_until = now() - interval '1 second' WHERE hold_id = :h"),
        {"h": paying},
    )
    await session.commit()
    _, fresh = await _hold(session, event, event.seat_ids[5:6])
    await ops.pause_sale(session, paused.event_id)
    await session.commit()

    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    sa_event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        board = await ops.dashboard(session)
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", count)
    await session.commit()
    assert len(statements) == 5

    assert [e.event_id for e in board.events] == [event.event_id, paused.event_id]
    selling, stopped = board.events
    assert stopped.status == EventStatus.PAUSED
    assert (stopped.capacity, stopped.available, stopped.held, stopped.sold) == (4, 4, 0, 0)
    assert (selling.capacity, selling.sold, selling.held) == (12, 2, 3)
    # The stuck payment's seat is past its deadline: claimable again.
    assert selling.available == 12 - 2 - 3
    # Created "now" (by the database clock): the fresh hold only; the others were moved back.
    assert selling.holds_last_minute == 1
    assert selling.holds_per_minute_5m == 0.2
    assert selling.orders_last_minute == 1
    assert selling.orders_per_minute_5m == 0.2
    assert [(r.amount_minor, r.currency) for r in selling.revenue] == [(10000, "GBP")]
    assert stopped.revenue == ()
    assert (selling.expiring_soon, selling.stuck_paying) == (1, 1)
    assert (board.expiring_soon, board.stuck_paying) == (1, 1)
    assert fresh in {row.hold_id for row in await reads.find_holds(session, event_id=event.event_id)}


async def test_an_empty_dashboard(session: AsyncSession) -> None:
    board = await ops.dashboard(session)
    assert board.events == ()
    assert (board.expiring_soon, board.stuck_paying) == (0, 0)
