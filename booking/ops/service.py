"""What on-call staff see and do: holds, stuck payments, refunds, pausing a sale, the dashboard.

Every verb here is an operator's view of a service that already exists: holds are released and
tidied by ``booking.holds.service``, payments settled by ``booking.payments.service``, orders
refunded by ``booking.orders.service``. This module adds the queries an operator needs to find
what to act on, and the checks that make an operator's act safe (a hold being paid for is not
released from under its payment). Verbs that take a session run in the caller's transaction
and do not commit; ``reconcile_order`` manages its own transactions, because it talks to the
payment provider between them.

Time is the database's: every "now", "expired" and "in the last minute" is ``now()``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking.catalog.lifecycle import EVENT_MOVES
from booking.catalog.models import Event, EventStatus
from booking.catalog.search import EVENT_CHANGED
from booking.errors import (
    BookingError,
    EventNotFound,
    HoldAlreadyEnded,
    HoldBeingPaid,
    HoldNotFound,
    NothingToReconcile,
    OrderNotRefundable,
    PaymentProviderUnreachable,
    SaleStateConflict,
)
from booking.holds import service as holds
from booking.holds.models import LIVE_STATES, Hold, HoldState
from booking.inventory.models import InventoryUnit, UnitState
from booking.inventory.service import busy_is_retryable
from booking.inventory.transitions import claimable
from booking.ops.reads import MAX_LIST, STUCK_AFTER, check_limit, overdue_holds, require_event, stuck_orders
from booking.orders import service as orders
from booking.orders.models import Order, OrderItem, OrderItemState, OrderState
from booking.outbox import emit
from booking.payments import service as payments
from booking.payments.gateway import GatewayError
from booking.payments.models import Payment, PaymentState
from booking.payments.registry import Gateways

# Holds whose deadline is this close are "about to expire" on the dashboard.
EXPIRING_SOON = dt.timedelta(seconds=60)
# The states a hold ends from by running out (``expire`` and ``lapse``); a paying hold's
# deadline is its payment grace, after which it is stuck rather than expired.
EXPIRES = frozenset({HoldState.ACTIVE, HoldState.FAILED})


# --- holds -------------------------------------------------------------------------------


async def release_hold_by_staff(session: AsyncSession, hold_id: uuid.UUID) -> holds.HoldView:
    """Release anyone's live hold: its units go back on sale now. The hold row stays locked
    from the check to the release, so a checkout cannot slip in between.

    Raises:
        HoldNotFound; HoldAlreadyEnded (released or expired already: nothing to do);
        HoldBeingPaid (its payment must be settled or refunded first, or a payment that then
        succeeds would find its seats sold to someone else); HoldStateConflict (confirmed or
        refunded: refund the order instead); InventoryBusy.
    """
    hold, _ = await holds.lock_hold(session, hold_id, None)
    if hold.state in (HoldState.RELEASED, HoldState.EXPIRED):
        raise HoldAlreadyEnded(f"The hold was already {hold.state.value}; its tickets are back on sale.")
    if hold.state == HoldState.PAYING:
        raise HoldBeingPaid(
            "A payment is in progress for this hold. Settle it first (reconcile the stuck order),"
            " or refund the order it becomes."
        )
    return await holds.release_hold(session, hold_id=hold_id)


async def release_expired(
    session: AsyncSession, event_id: uuid.UUID | None = None, *, limit: int = MAX_LIST
) -> int:
    """Tidy now what the sweeper would: holds past their deadline (of one event, or all),
    oldest first, at most ``limit``. Returns how many changed. Holds another sweeper is
    working on are skipped, not waited for; repeating finds nothing more to do.

    Raises:
        EventNotFound; InvalidRequest (``limit`` outside 1..1000).
    """
    check_limit(limit)
    query = select(Hold.id).where(overdue_holds()).order_by(Hold.expires_at).limit(limit)
    if event_id is not None:
        await require_event(session, event_id)
        query = query.where(Hold.event_id == event_id)
    ids = (await session.scalars(query.with_for_update(skip_locked=True))).all()
    tidied = 0
    for hold_id in ids:
        tidied += await holds.expire_hold(session, hold_id)
    return tidied


# --- stuck orders ------------------------------------------------------------------------


async def _due_of_hold(session: AsyncSession, hold_id: uuid.UUID) -> payments.Due:
    """The hold's pending payment, as reconciliation takes it.

    Raises:
        HoldNotFound, NothingToReconcile.
    """
    overdue = Hold.expires_at <= func.now()
    abandoned = Hold.expires_at <= func.now() - payments.ABANDON_AFTER
    row = (
        await session.execute(
            select(Payment.id, Payment.provider, Payment.provider_ref, overdue, abandoned)
            .join(Hold, Hold.id == Payment.hold_id)
            .where(Payment.hold_id == hold_id, Payment.state == PaymentState.PENDING)
        )
    ).first()
    if row is not None:
        payment_id, provider, ref, late, gone = row
        return payments.Due(payment_id, hold_id, provider, ref, bool(late), bool(gone))
    hold_state = await session.scalar(select(Hold.state).where(Hold.id == hold_id))
    if hold_state is None:
        raise HoldNotFound()
    latest = await payments.payment_of_hold(session, hold_id)
    if latest is None:
        raise NothingToReconcile(f"The hold is {hold_state.value} and has no payment.")
    raise NothingToReconcile(
        f"The hold's payment is already {latest.state.value} (the hold is {hold_state.value})."
    )


async def reconcile_order(
    sessions: async_sessionmaker[AsyncSession], gateways: Gateways, hold_id: uuid.UUID
) -> payments.Settlement:
    """Settle the hold's pending payment now by asking its provider, exactly as the
    reconciliation job would, and return the settlement (which may still be ``pending``:
    the provider does not know yet). Safe to repeat and to run beside the job.

    Raises:
        HoldNotFound; NothingToReconcile (no pending payment); PaymentProviderUnavailable
        (its provider is not configured here); PaymentProviderUnreachable (the provider
        failed to answer: the payment stays pending for the next round).
    """
    async with sessions() as session:
        due = await _due_of_hold(session, hold_id)
    gateway = gateways.get(due.provider)
    try:
        return await payments.reconcile(sessions, gateway, due)
    except GatewayError as error:
        await payments.postpone(sessions, payment_id=due.payment_id)
        raise PaymentProviderUnreachable(
            f"{due.provider.value} did not answer ({error}); the payment stays pending."
        ) from None


@dataclass(frozen=True)
class Reconciled:
    hold_id: uuid.UUID
    settlement: payments.Settlement | None
    error: str | None = None


async def reconcile_stuck(
    sessions: async_sessionmaker[AsyncSession],
    gateways: Gateways,
    *,
    older_than: dt.timedelta = STUCK_AFTER,
    limit: int = 100,
) -> list[Reconciled]:
    """Reconcile every stuck order with a pending payment, oldest first. One that fails (its
    provider is away or not configured) is reported and does not stop the others; database
    errors propagate.

    Raises:
        InvalidRequest (bad ``older_than`` or ``limit``).
    """
    async with sessions() as session:
        stuck = await stuck_orders(session, older_than=older_than, limit=limit)
    done: list[Reconciled] = []
    for item in stuck:
        if item.payment_id is None:
            continue
        try:
            settled = await reconcile_order(sessions, gateways, item.hold_id)
        except (NothingToReconcile, HoldNotFound):
            continue  # settled meanwhile by a webhook or the job
        except BookingError as error:
            done.append(Reconciled(item.hold_id, None, f"{type(error).__name__}: {error.detail}"))
            continue
        done.append(Reconciled(item.hold_id, settled))
    return done


# --- refunds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffRefund:
    """The order after its refund; ``refund_recorded`` is False for an order paid at a till
    (cash or card terminal), whose money is handed back in person."""

    order: orders.OrderView
    refund_recorded: bool


async def refund_order_by_staff(session: AsyncSession, order_id: uuid.UUID) -> StaffRefund:
    """Refund a confirmed order whenever staff decide to (no cancellation cut-off): its seats
    back on sale, its tickets revoked, and the refund of its payment recorded for the refund
    job, all in the caller's transaction.

    Raises:
        OrderNotFound; OrderNotRefundable (already refunded or cancelled); InventoryBusy.
    """
    view = await orders.get_order(session, order_id, fan_id=None)
    if view.state != OrderState.CONFIRMED:
        raise OrderNotRefundable(f"The order is already {view.state}.")
    async with busy_is_retryable():
        if not await orders.refund_order(session, order_id=order_id):
            # Refunded by someone else between the read and the row lock.
            raise OrderNotRefundable("The order was refunded meanwhile.")
    recorded = await payments.request_order_refund(session, order_id)
    return StaffRefund(await orders.get_order(session, order_id, fan_id=None), recorded)


# --- pausing a sale ----------------------------------------------------------------------

# move -> (the one status it may start from, the status it ends in): on-call's part of the
# event lifecycle's table, which holds every move of an event.
SALE_MOVES: dict[str, tuple[EventStatus, EventStatus]] = {
    move: (next(iter(EVENT_MOVES[move][0])), EVENT_MOVES[move][1]) for move in ("pause", "resume")
}


@dataclass(frozen=True)
class SaleChange:
    event_id: uuid.UUID
    title: str
    previous: EventStatus
    status: EventStatus


async def _move_sale(session: AsyncSession, event_id: uuid.UUID, move: str) -> SaleChange:
    source, target = SALE_MOVES[move]
    # One guarded statement: of two operators pausing at once, exactly one changes the row
    # (the other's WHERE no longer matches once the first commits).
    async with busy_is_retryable():
        row = (
            await session.execute(
                update(Event)
                .where(Event.id == event_id, Event.status == source)
                .values(status=target)
                .returning(Event.title)
            )
        ).first()
    if row is None:
        status = await session.scalar(select(Event.status).where(Event.id == event_id))
        if status is None:
            raise EventNotFound(f"There is no event {event_id}.")
        raise SaleStateConflict(f"Cannot {move} the sale of an event that is {status.value}.")
    await emit(
        session,
        EVENT_CHANGED,
        {"event_id": str(event_id), "status": target.value, "previous": source.value},
        catalog_event_id=event_id,
    )
    return SaleChange(event_id, row[0], source, target)


async def pause_sale(session: AsyncSession, event_id: uuid.UUID) -> SaleChange:
    """Stop selling an event at once: no new hold is granted while it is paused (the claim
    checks the status), while holds already made keep their seats and may still be paid.

    Raises:
        EventNotFound; SaleStateConflict (not on sale); InventoryBusy.
    """
    return await _move_sale(session, event_id, "pause")


async def resume_sale(session: AsyncSession, event_id: uuid.UUID) -> SaleChange:
    """Sell a paused event again (within its on-sale window).

    Raises:
        EventNotFound; SaleStateConflict (not paused); InventoryBusy.
    """
    return await _move_sale(session, event_id, "resume")


# --- dashboard ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Amount:
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class EventDashboard:
    """One event selling now or paused. ``available`` counts what a new hold could claim
    (free, or held past its deadline), ``held`` what live holds keep; ``capacity`` leaves
    out units withheld from sale. Rates are per minute over the last minute and the last five.
    """

    event_id: uuid.UUID
    title: str
    status: EventStatus
    starts_at: dt.datetime
    capacity: int
    available: int
    held: int
    sold: int
    holds_last_minute: int
    holds_per_minute_5m: float
    orders_last_minute: int
    orders_per_minute_5m: float
    revenue: tuple[Amount, ...]
    expiring_soon: int
    stuck_paying: int


@dataclass(frozen=True)
class Dashboard:
    at: dt.datetime
    events: tuple[EventDashboard, ...]
    # Over the events shown: holds within a minute of running out, and holds in ``paying``
    # past their payment deadline.
    expiring_soon: int
    stuck_paying: int


def _per_minute(count: int, minutes: int) -> float:
    return round(count / minutes, 1)


async def dashboard(session: AsyncSession) -> Dashboard:
    """The live picture of every event on sale or paused that has not ended, in five
    grouped statements whatever the number of events, all read at one database instant."""
    now = await session.scalar(select(func.now()))
    assert now is not None
    units = (
        await session.execute(
            select(
                Event.id,
                Event.title,
                Event.status,
                Event.starts_at,
                func.count(InventoryUnit.id).filter(InventoryUnit.state != UnitState.BLOCKED),
                func.count(InventoryUnit.id).filter(claimable()),
                func.count(InventoryUnit.id).filter(
                    InventoryUnit.state == UnitState.HELD, InventoryUnit.held_until >= func.now()
                ),
                func.count(InventoryUnit.id).filter(InventoryUnit.state == UnitState.SOLD),
            )
            .outerjoin(InventoryUnit, InventoryUnit.event_id == Event.id)
            .where(Event.status.in_([EventStatus.ON_SALE, EventStatus.PAUSED]), Event.ends_at > func.now())
            .group_by(Event.id)
            .order_by(Event.starts_at, Event.id)
        )
    ).all()
    ids = [row[0] for row in units]
    if not ids:
        return Dashboard(at=now, events=(), expiring_soon=0, stuck_paying=0)
    minute, five = func.now() - dt.timedelta(minutes=1), func.now() - dt.timedelta(minutes=5)
    hold_counts = {
        row[0]: row[1:]
        for row in await session.execute(
            select(
                Hold.event_id,
                func.count().filter(Hold.created_at > minute),
                func.count().filter(Hold.created_at > five),
                func.count().filter(
                    Hold.state.in_(list(EXPIRES)),
                    Hold.expires_at > func.now(),
                    Hold.expires_at <= func.now() + EXPIRING_SOON,
                ),
                func.count().filter(Hold.state == HoldState.PAYING, Hold.expires_at <= func.now()),
            )
            .where(
                Hold.event_id.in_(ids),
                or_(Hold.created_at > five, Hold.state.in_(list(LIVE_STATES))),
            )
            .group_by(Hold.event_id)
        )
    }
    order_counts = {
        row[0]: row[1:]
        for row in await session.execute(
            select(
                Order.event_id,
                func.count().filter(Order.created_at > minute),
                func.count(),
            )
            .where(Order.event_id.in_(ids), Order.created_at > five)
            .group_by(Order.event_id)
        )
    }
    revenue: dict[uuid.UUID, list[Amount]] = {}
    for event_id, currency, total in await session.execute(
        select(Order.event_id, OrderItem.currency, func.sum(OrderItem.price_minor))
        .join(Order, Order.id == OrderItem.order_id)
        .where(Order.event_id.in_(ids), OrderItem.state == OrderItemState.ACTIVE)
        .group_by(Order.event_id, OrderItem.currency)
        .order_by(Order.event_id, OrderItem.currency)
    ):
        revenue.setdefault(event_id, []).append(Amount(int(total), currency))
    events: list[EventDashboard] = []
    for event_id, title, status, starts_at, capacity, available, held, sold in units:
        holds_1m, holds_5m, expiring, stuck = hold_counts.get(event_id, (0, 0, 0, 0))
        orders_1m, orders_5m = order_counts.get(event_id, (0, 0))
        events.append(
            EventDashboard(
                event_id=event_id,
                title=title,
                status=status,
                starts_at=starts_at,
                capacity=capacity,
                available=available,
                held=held,
                sold=sold,
                holds_last_minute=holds_1m,
                holds_per_minute_5m=_per_minute(holds_5m, 5),
                orders_last_minute=orders_1m,
                orders_per_minute_5m=_per_minute(orders_5m, 5),
                revenue=tuple(revenue.get(event_id, ())),
                expiring_soon=expiring,
                stuck_paying=stuck,
            )
        )
    return Dashboard(
        at=now,
        events=tuple(events),
        expiring_soon=sum(e.expiring_soon for e in events),
        stuck_paying=sum(e.stuck_paying for e in events),
    )
