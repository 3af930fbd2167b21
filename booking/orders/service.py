"""Confirmation and refunds: where a paid hold becomes an order with tickets, or money goes back.

Promise: every payment that succeeds ends as a confirmed order or as a refund. ``confirm_hold``
never loses a paid hold: if its seats are still (or again) free they are sold, otherwise the
hold is marked ``refunded`` and a ``hold.refund_required`` fact is written for the payments
side to act on.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from booking import metrics
from booking.catalog.models import Event, PriceTier
from booking.errors import CancellationClosed, HoldStateConflict, OrderNotFound
from booking.holds.models import LIVE_STATES, Hold, HoldItem, HoldState
from booking.holds.service import (
    lock_fan_cap,
    lock_hold,
    move_hold,
    tickets_of_fan,
    units_changed,
)
from booking.inventory import service as inventory
from booking.inventory.models import InventoryUnit, UnitState
from booking.inventory.transitions import Move, guard
from booking.orders.models import Order, OrderChannel, OrderItem, OrderItemState, OrderState
from booking.outbox import Topic, emit
from booking.sqltext import HotStatement, param, sql
from booking.tickets.models import Ticket, TicketState
from booking.tickets.service import SEAT_PLACE_COLUMNS, join_seat_place, seat_label


class Outcome(enum.StrEnum):
    CONFIRMED = "confirmed"
    REFUND_REQUIRED = "refund_required"


@dataclass(frozen=True)
class Confirmation:
    outcome: Outcome
    hold_id: uuid.UUID
    order_id: uuid.UUID | None
    # True when this call found the work already done (a repeated webhook or job).
    repeated: bool
    # Why the money goes back, when it does (``Outcome.REFUND_REQUIRED``).
    refund_reason: str | None = None


class _SeatsGone(Exception):
    pass


async def confirm_hold(
    session: AsyncSession, *, hold_id: uuid.UUID, channel: OrderChannel = OrderChannel.ONLINE
) -> Confirmation:
    """Turn a hold whose payment succeeded into an order: units sold, order, items and one
    ticket per unit, all in the caller's transaction. Safe to repeat.

    The money comes back instead (``Outcome.REFUND_REQUIRED``, with the reason) when the
    hold's units went to someone else after its deadline (``seats_taken``), or when the hold
    had stopped counting toward its fan's cap (past its deadline, or given up) and the fan's
    other tickets now leave no room for it (``ticket_cap``).

    Raises:
        HoldNotFound, InventoryBusy.
    """
    hold, now = await lock_hold(session, hold_id, None)
    if hold.state == HoldState.CONFIRMED:
        order_id = await session.scalar(select(Order.id).where(Order.hold_id == hold_id))
        return Confirmation(Outcome.CONFIRMED, hold_id, order_id, repeated=True)
    if hold.state == HoldState.REFUNDED:
        return Confirmation(Outcome.REFUND_REQUIRED, hold_id, None, repeated=True)
    counted = hold.state in LIVE_STATES and hold.expires_at > now
    if hold.fan_id is not None and hold.ticket_cap is not None and not counted:
        # Before any unit is locked: a new hold takes this lock first and units after it.
        await lock_fan_cap(session, hold.fan_id, hold.event_id)
        if await tickets_of_fan(session, hold.fan_id, hold.event_id) + hold.quantity > hold.ticket_cap:
            return await _refund_required(session, hold, reason="ticket_cap")
    items = (
        await session.scalars(select(HoldItem).where(HoldItem.hold_id == hold_id).order_by(HoldItem.unit_id))
    ).all()
    try:
        async with session.begin_nested():
            order_id = await session.scalar(
                insert(Order)
                .values(
                    hold_id=hold_id,
                    event_id=hold.event_id,
                    fan_id=hold.fan_id,
                    staff_key_id=hold.staff_key_id,
                    channel=channel,
                    total_minor=hold.total_minor,
                    currency=hold.currency,
                )
                .returning(Order.id)
            )
            assert order_id is not None
            sold = await inventory.sell_units(
                session, unit_ids=[item.unit_id for item in items], hold_id=hold_id, order_id=order_id
            )
            if len(sold) < len(items):
                raise _SeatsGone()
    except _SeatsGone:
        return await _refund_required(session, hold, reason="seats_taken")

    item_ids = (
        await session.scalars(
            insert(OrderItem).returning(OrderItem.id, sort_by_parameter_order=True),
            [
                {
                    "order_id": order_id,
                    "unit_id": item.unit_id,
                    "price_tier_id": item.price_tier_id,
                    "price_minor": item.price_minor,
                    "currency": item.currency,
                }
                for item in items
            ],
        )
    ).all()
    ticket_ids = (
        await session.scalars(
            insert(Ticket).returning(Ticket.id, sort_by_parameter_order=True),
            [
                {
                    "order_id": order_id,
                    "order_item_id": item_id,
                    "event_id": hold.event_id,
                    "unit_id": item.unit_id,
                }
                for item_id, item in zip(item_ids, items, strict=True)
            ],
        )
    ).all()
    if not await move_hold(session, hold_id, "confirm"):
        raise HoldStateConflict(hold.state.value, "confirm")
    await emit(
        session,
        Topic.ORDER_CONFIRMED,
        {"order_id": str(order_id), "hold_id": str(hold_id), "ticket_ids": [str(t) for t in ticket_ids]},
        catalog_event_id=hold.event_id,
    )
    await units_changed(session, hold.event_id, sold, UnitState.SOLD)
    metrics.count_on_commit(session, metrics.ORDERS_CONFIRMED.labels(channel.value))
    return Confirmation(Outcome.CONFIRMED, hold_id, order_id, repeated=False)


def _confirm_paid_sql() -> str:
    """A paid hold made an order in one statement: the common case of ``settle`` for a
    payment that succeeded while its hold was still ``paying`` and within its deadline (so
    still counted toward its fan's cap; a later success goes the slow way, which checks).

    The payment row, then the hold row, are locked (the order every settlement takes them
    in); the units are locked in id order and sold under the transition table's SELL guard;
    the order, its items, one ticket per unit, the hold's and payment's new states and the
    outbox facts follow, each only if every unit was sold. When not (a unit went to someone
    else after the deadline), the statement has still sold some units: the caller must roll
    back and settle the slow way, which records the refund.
    """
    sell = f"({sql(guard(Move.SELL, hold_id=param('hold_id')))})"
    return (
        "WITH pay AS (SELECT id FROM payments"  # noqa: S608 (constants, made at import)
        "  WHERE id = :payment_id AND hold_id = :hold_id AND state = 'pending' FOR UPDATE),"
        " h AS (SELECT holds.id, holds.event_id, holds.fan_id, holds.staff_key_id, holds.total_minor,"
        "  holds.currency FROM holds, pay WHERE holds.id = :hold_id AND holds.state = 'paying'"
        "  AND holds.expires_at > now() FOR UPDATE OF holds),"
        " items AS (SELECT hi.unit_id, hi.price_tier_id, hi.price_minor, hi.currency"
        "  FROM hold_items hi, h WHERE hi.hold_id = h.id),"
        " new_order AS (SELECT gen_random_uuid() AS id FROM h),"
        " locked AS (SELECT inventory_units.id FROM inventory_units"
        "  WHERE inventory_units.id IN (SELECT unit_id FROM items) ORDER BY inventory_units.id FOR UPDATE),"
        " sold AS (UPDATE inventory_units SET state = 'sold', order_id = new_order.id, hold_id = NULL,"
        "  held_until = NULL, updated_at = now() FROM new_order"
        f"  WHERE inventory_units.id IN (SELECT id FROM locked) AND {sell}"
        "  RETURNING inventory_units.id),"
        " complete AS (SELECT new_order.id FROM new_order"
        "  WHERE (SELECT count(*) FROM sold) = (SELECT count(*) FROM items)),"
        " ord AS (INSERT INTO orders (id, hold_id, event_id, fan_id, staff_key_id, channel, total_minor,"
        "  currency) SELECT complete.id, h.id, h.event_id, h.fan_id, h.staff_key_id, :channel,"
        "  h.total_minor, h.currency FROM complete, h RETURNING id),"
        " lines AS (INSERT INTO order_items (order_id, unit_id, price_tier_id, price_minor, currency)"
        "  SELECT complete.id, items.unit_id, items.price_tier_id, items.price_minor, items.currency"
        "  FROM complete, items RETURNING id, unit_id),"
        " issued AS (INSERT INTO tickets (order_id, order_item_id, event_id, unit_id)"
        "  SELECT complete.id, lines.id, h.event_id, lines.unit_id FROM complete, lines, h"
        "  RETURNING id, unit_id),"
        " hold_moved AS (UPDATE holds SET state = 'confirmed', ended_at = now() FROM complete"
        "  WHERE holds.id = :hold_id RETURNING holds.id),"
        " pay_moved AS (UPDATE payments SET state = 'succeeded', order_id = complete.id,"
        "  provider_ref = coalesce(payments.provider_ref, :ref), updated_at = now() FROM complete"
        "  WHERE payments.id = :payment_id RETURNING payments.id),"
        " facts AS (INSERT INTO outbox (topic, payload, catalog_event_id)"
        "  SELECT :confirmed, jsonb_build_object('order_id', CAST(complete.id AS text),"
        "   'hold_id', CAST(h.id AS text),"
        "   'ticket_ids', (SELECT jsonb_agg(CAST(id AS text) ORDER BY unit_id) FROM issued)), h.event_id"
        "  FROM complete, h"
        "  UNION ALL SELECT :units, jsonb_build_object('event_id', CAST(h.event_id AS text),"
        "   'unit_ids', (SELECT jsonb_agg(id ORDER BY id) FROM sold), 'state', 'sold'), h.event_id"
        "  FROM complete, h)"
        " SELECT (SELECT count(*) FROM h), (SELECT id FROM ord),"
        "  (SELECT count(*) FROM hold_moved) + (SELECT count(*) FROM pay_moved)"
    )


_CONFIRM_PAID = HotStatement(_confirm_paid_sql())


async def confirm_paid(
    session: AsyncSession,
    *,
    payment_id: uuid.UUID,
    hold_id: uuid.UUID,
    ref: str | None,
    channel: OrderChannel = OrderChannel.ONLINE,
) -> uuid.UUID | None:
    """Confirm a hold being paid for whose payment ``payment_id`` (still pending) succeeded:
    one round trip. Returns the new order's id, or None when this case does not apply (the
    payment or hold moved on meanwhile, or a unit is gone); the caller must then roll back
    and settle through ``booking.payments.service.settle``, which handles every case.

    Raises:
        InventoryBusy.
    """
    params = {
        "payment_id": payment_id,
        "hold_id": hold_id,
        "ref": ref,
        "channel": channel.value,
        "confirmed": Topic.ORDER_CONFIRMED,
        "units": Topic.UNITS_CHANGED,
    }
    async with inventory.busy_is_retryable():
        ((found, order_id, moved),) = await _CONFIRM_PAID.rows(session, params)
    if not found or order_id is None:
        return None
    assert moved == 2, "the hold and the payment move with the order"
    metrics.count_on_commit(session, metrics.ORDERS_CONFIRMED.labels(channel.value))
    return uuid.UUID(str(order_id))


async def _refund_required(session: AsyncSession, hold: Hold, *, reason: str) -> Confirmation:
    released = await inventory.move_hold_units(session, Move.RELEASE, hold_id=hold.id)
    if not await move_hold(session, hold.id, "refund"):
        raise HoldStateConflict(hold.state.value, "refund")
    await emit(
        session,
        Topic.HOLD_REFUND_REQUIRED,
        {
            "hold_id": str(hold.id),
            "reason": reason,
            "amount_minor": hold.total_minor,
            "currency": hold.currency,
        },
        catalog_event_id=hold.event_id,
    )
    await units_changed(session, hold.event_id, released, UnitState.AVAILABLE)
    rejected = "seat_taken" if reason == "seats_taken" else reason
    metrics.count_on_commit(session, metrics.OVERSELL_REJECTIONS.labels(rejected, "confirm"))
    return Confirmation(Outcome.REFUND_REQUIRED, hold.id, None, repeated=False, refund_reason=reason)


async def refund_order(session: AsyncSession, *, order_id: uuid.UUID) -> bool:
    """Refund a whole order: its units back on sale, items refunded, tickets revoked.
    Returns False when it was already refunded (nothing changes).

    Raises:
        OrderNotFound.
    """
    order = await session.scalar(
        select(Order).where(Order.id == order_id).with_for_update().execution_options(populate_existing=True)
    )
    if order is None:
        raise OrderNotFound()
    if order.state != OrderState.CONFIRMED:
        return False
    units = await inventory.return_units(session, order_id=order_id)
    await session.execute(
        update(OrderItem)
        .where(OrderItem.order_id == order_id, OrderItem.state == OrderItemState.ACTIVE)
        .values(state=OrderItemState.REFUNDED)
    )
    await session.execute(
        update(Ticket)
        .where(Ticket.order_id == order_id, Ticket.state == TicketState.VALID)
        .values(state=TicketState.REVOKED, revoked_at=func.now())
    )
    await session.execute(
        update(Order).where(Order.id == order_id).values(state=OrderState.REFUNDED, cancelled_at=func.now())
    )
    await emit(
        session,
        Topic.ORDER_REFUNDED,
        {"order_id": str(order_id), "amount_minor": order.total_minor, "currency": order.currency},
        catalog_event_id=order.event_id,
    )
    await units_changed(session, order.event_id, units, UnitState.AVAILABLE)
    return True


@dataclass(frozen=True)
class OrderLine:
    """One ticket of an order: the unit sold, where it is and at what price.

    ``section``/``row``/``number`` place a reserved seat and are None for a general-admission
    place; ``seat`` is the label the ticket carries (see ``booking.tickets.service.seat_label``).
    """

    unit_id: int
    seat_id: int | None
    price_tier_id: uuid.UUID
    tier_name: str
    section: str | None
    row: str | None
    number: str | None
    price_minor: int
    currency: str
    state: str
    ticket_id: uuid.UUID | None

    @property
    def seat(self) -> str:
        return seat_label(section=self.section, row=self.row, number=self.number, tier_name=self.tier_name)


@dataclass(frozen=True)
class OrderView:
    id: uuid.UUID
    event_id: uuid.UUID
    hold_id: uuid.UUID
    state: str
    channel: str
    total_minor: int
    currency: str
    created_at: dt.datetime
    cancelled_at: dt.datetime | None
    lines: tuple[OrderLine, ...]


async def _lines_of(session: AsyncSession, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[OrderLine]]:
    """The lines of several orders in one statement (tier, seat place and ticket joined in),
    by order, each order's by unit."""
    if not order_ids:
        return {}
    query = join_seat_place(
        select(
            OrderItem,
            InventoryUnit.seat_id,
            PriceTier.name.label("tier_name"),
            *SEAT_PLACE_COLUMNS,
            Ticket.id.label("ticket_id"),
        )
        .join(InventoryUnit, InventoryUnit.id == OrderItem.unit_id)
        .join(PriceTier, PriceTier.id == OrderItem.price_tier_id)
        .outerjoin(Ticket, Ticket.order_item_id == OrderItem.id)
    ).where(OrderItem.order_id.in_(order_ids))
    lines: dict[uuid.UUID, list[OrderLine]] = {}
    for row in (await session.execute(query.order_by(OrderItem.order_id, OrderItem.unit_id))).all():
        item: OrderItem = row.OrderItem
        lines.setdefault(item.order_id, []).append(
            OrderLine(
                unit_id=item.unit_id,
                seat_id=row.seat_id,
                price_tier_id=item.price_tier_id,
                tier_name=row.tier_name,
                section=row.section,
                row=row.row,
                number=row.number,
                price_minor=item.price_minor,
                currency=item.currency,
                state=item.state.value,
                ticket_id=row.ticket_id,
            )
        )
    return lines


def _view(order: Order, lines: list[OrderLine]) -> OrderView:
    return OrderView(
        id=order.id,
        event_id=order.event_id,
        hold_id=order.hold_id,
        state=order.state.value,
        channel=order.channel.value,
        total_minor=order.total_minor,
        currency=order.currency,
        created_at=order.created_at,
        cancelled_at=order.cancelled_at,
        lines=tuple(lines),
    )


async def get_order(session: AsyncSession, order_id: uuid.UUID, *, fan_id: uuid.UUID | None) -> OrderView:
    """An order with its lines (tier, seat label) and tickets: two statements however many
    lines it has. With ``fan_id``, another fan's order is reported as not found, exactly like
    a missing one.

    Raises:
        OrderNotFound.
    """
    query = select(Order).where(Order.id == order_id).execution_options(populate_existing=True)
    if fan_id is not None:
        query = query.where(Order.fan_id == fan_id)
    order = await session.scalar(query)
    if order is None:
        raise OrderNotFound()
    return _view(order, (await _lines_of(session, [order.id])).get(order.id, []))


async def list_orders(session: AsyncSession, *, fan_id: uuid.UUID, limit: int = 50) -> list[OrderView]:
    """A fan's orders, newest first, with their lines: two statements however many orders."""
    found = (
        await session.scalars(
            select(Order)
            .where(Order.fan_id == fan_id)
            .order_by(Order.created_at.desc(), Order.id)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
    ).all()
    lines = await _lines_of(session, [order.id for order in found])
    return [_view(order, lines.get(order.id, [])) for order in found]


async def cancel_order(
    session: AsyncSession, *, order_id: uuid.UUID, fan_id: uuid.UUID | None, cutoff: dt.timedelta
) -> OrderView:
    """Cancel a confirmed order up to ``cutoff`` before its event starts: seats back on sale,
    tickets revoked, an ``order.refunded`` fact on the outbox (the payment side records and
    makes the refund). Cancelling a cancelled order changes nothing.

    Raises:
        OrderNotFound, CancellationClosed (too close to the event), InventoryBusy.
    """
    view = await get_order(session, order_id, fan_id=fan_id)
    if view.state != OrderState.CONFIRMED:
        return view
    open_until = await session.scalar(
        select(Event.starts_at - cutoff > func.now()).where(Event.id == view.event_id)
    )
    if not open_until:
        hours = int(cutoff.total_seconds() // 3600)
        raise CancellationClosed(f"Orders can be cancelled until {hours} hours before the event starts.")
    await refund_order(session, order_id=order_id)
    return await get_order(session, order_id, fan_id=fan_id)
