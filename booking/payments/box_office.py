"""Walk-up sales at the box office: a hold owned by a staff key, paid at the counter in cash or
by card on the till's terminal, and confirmed in the transaction that records the payment.

A sale is a hold whose owner is the staff key of the till (``Owner(staff_key_id=...)``): it
claims seats through the same guarded statement as a fan's hold, so a seat is never offered
to a till and a fan at once. Unlike online checkout there is no provider to wait for, so a
payment is never ``pending`` and the hold never sits in ``paying``: ``take_payment`` records
the money as succeeded and confirms the hold (units sold, order, tickets, outbox) in the
caller's one transaction, or raises and the caller rolls everything back.

Another key's sale answers exactly like a missing one, as another fan's hold does. Verbs run
in the caller's transaction and do not commit.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, not_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.models import Event
from booking.catalog.search import on_sale_now
from booking.errors import (
    CashShort,
    EventNotFound,
    HoldStateConflict,
    InvalidRequest,
    OrderNotFound,
    SaleSeatsGone,
)
from booking.holds import service as holds
from booking.holds.models import HoldState
from booking.holds.policy import HoldPolicy
from booking.holds.service import ClaimHook, HoldView, Owner, Selection
from booking.inventory import seatmap
from booking.inventory.models import InventoryUnit as U
from booking.inventory.models import UnitState
from booking.inventory.transitions import claimable
from booking.money import money
from booking.orders.models import Order, OrderChannel
from booking.orders.service import OrderView, Outcome, confirm_hold, get_order
from booking.payments.models import Payment, PaymentProvider, PaymentState

# What a till can take. Both are in hand when the till asks: the cash counted, or the card
# terminal's approval with its reference.
METHODS = frozenset({PaymentProvider.CASH, PaymentProvider.CARD_PRESENT})
# A terminal's reference goes in the payment's details, not ``provider_ref``: two tills'
# terminals may print the same reference, and ``provider_ref`` is unique per provider and is
# what the refund job pays back through. This bounds what a typo can store.
MAX_REFERENCE = 120
# Payments are bigint amounts; a tendered sum beyond this is a typo, not cash.
MAX_TENDERED_MINOR = 10**12
# A box-office hold may be paid while it is live, or after its deadline if its units are still
# free (the guarded sale decides). Released means the till abandoned it: a new sale is needed.
PAYABLE = frozenset({HoldState.ACTIVE, HoldState.EXPIRED})


async def start_sale(
    session: AsyncSession,
    *,
    staff_key_id: uuid.UUID,
    event_id: uuid.UUID,
    selection: Selection,
    policy: HoldPolicy,
    inside_claim: ClaimHook | None = None,
) -> HoldView:
    """Hold seats (all or none) or GA places for a walk-up buyer, owned by the till's key.

    No per-fan cap applies; one sale holds at most ``policy.units_per_staff_hold`` units.
    ``inside_claim`` is passed to ``create_hold`` (tests widen the race window with it).

    Raises:
        InvalidRequest, EventNotFound, SaleNotOpen, TierNotFound, UnknownSeats, SeatsTaken,
        SoldOut, NotEnoughLeft, InventoryBusy.
    """
    return await holds.create_hold(
        session,
        owner=Owner(staff_key_id=staff_key_id),
        event_id=event_id,
        selection=selection,
        policy=policy,
        inside_claim=inside_claim,
    )


async def get_sale(session: AsyncSession, *, hold_id: uuid.UUID, staff_key_id: uuid.UUID) -> HoldView:
    """The sale (hold) as it is now.

    Raises:
        HoldNotFound: no such hold, or another key's (indistinguishable).
    """
    return await holds.get_hold(session, hold_id, Owner(staff_key_id=staff_key_id))


async def abandon_sale(session: AsyncSession, hold_id: uuid.UUID, staff_key_id: uuid.UUID) -> HoldView:
    """Give up a sale before it is paid: its seats go back on sale at once. Abandoning an
    abandoned or expired sale changes nothing and returns it.

    Raises:
        HoldNotFound: no such hold, or another key's.
        HoldStateConflict: the sale was paid (its seats are sold).
        InventoryBusy.
    """
    return await holds.release_hold(session, hold_id=hold_id, owner=Owner(staff_key_id=staff_key_id))


@dataclass(frozen=True)
class Tender:
    """What the till took. ``amount_minor`` is the total charged; cash also has what was
    handed over and the change due, a card payment the terminal's reference."""

    method: PaymentProvider
    amount_minor: int
    currency: str
    tendered_minor: int | None = None
    change_minor: int | None = None
    reference: str | None = None

    def details(self) -> dict[str, Any]:
        if self.method == PaymentProvider.CASH:
            return {"tendered_minor": self.tendered_minor, "change_minor": self.change_minor}
        return {"reference": self.reference}

    @classmethod
    def of(cls, payment: Payment) -> Tender:
        details = payment.details or {}
        return cls(
            method=payment.provider,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            tendered_minor=details.get("tendered_minor"),
            change_minor=details.get("change_minor"),
            reference=details.get("reference"),
        )


@dataclass(frozen=True)
class PaidSale:
    """A paid walk-up sale: its payment, what was taken, and the order with its tickets.
    ``repeated`` is True when the hold had already been paid (a retry): nothing new was
    taken, and this is the first payment's answer."""

    payment_id: uuid.UUID
    hold_id: uuid.UUID
    tender: Tender
    order: OrderView
    repeated: bool


def _method(method: PaymentProvider | str) -> PaymentProvider:
    """Raises: InvalidRequest (not a method a till takes)."""
    refused = InvalidRequest("A till takes cash or card_present.")
    try:
        chosen = PaymentProvider(method)
    except ValueError:
        raise refused from None
    if chosen not in METHODS:
        raise refused
    return chosen


def _check_shape(method: PaymentProvider, tendered_minor: int | None, reference: str | None) -> str | None:
    """The fields each method needs, and no others; returns the cleaned reference.

    Raises:
        InvalidRequest.
    """
    if method == PaymentProvider.CASH:
        if reference is not None:
            raise InvalidRequest("A cash payment has no reference; send tendered_minor only.")
        if tendered_minor is None:
            raise InvalidRequest("A cash payment needs tendered_minor: the cash handed over, in minor units.")
        if not 0 <= tendered_minor <= MAX_TENDERED_MINOR:
            raise InvalidRequest(f"tendered_minor must be between 0 and {MAX_TENDERED_MINOR}.")
        return None
    if tendered_minor is not None:
        raise InvalidRequest("A card_present payment has no tendered_minor; send the terminal's reference.")
    cleaned = (reference or "").strip()
    if not cleaned:
        raise InvalidRequest("A card_present payment needs the reference the card terminal printed.")
    if len(cleaned) > MAX_REFERENCE or "\x00" in cleaned:
        raise InvalidRequest(f"The terminal reference is at most {MAX_REFERENCE} printable characters.")
    return cleaned


def _tender(
    method: PaymentProvider,
    total_minor: int,
    currency: str,
    tendered_minor: int | None,
    reference: str | None,
) -> Tender:
    """Raises: CashShort (less cash than the total)."""
    if method == PaymentProvider.CARD_PRESENT:
        return Tender(method, total_minor, currency, reference=reference)
    assert tendered_minor is not None
    if tendered_minor < total_minor:
        short = total_minor - tendered_minor
        raise CashShort(
            total=money(total_minor, currency),
            tendered=money(tendered_minor, currency),
            short=money(short, currency),
            total_minor=total_minor,
            tendered_minor=tendered_minor,
            shortfall_minor=short,
            currency=currency,
        )
    return Tender(
        method,
        total_minor,
        currency,
        tendered_minor=tendered_minor,
        change_minor=tendered_minor - total_minor,
    )


async def _paid_sale(session: AsyncSession, hold_id: uuid.UUID, state: HoldState) -> PaidSale:
    """The answer for a hold already paid at a till: its one succeeded payment and order.

    Raises:
        HoldStateConflict: the hold was confirmed some other way (no till payment).
    """
    payment = await session.scalar(
        select(Payment).where(
            Payment.hold_id == hold_id,
            Payment.state == PaymentState.SUCCEEDED,
            Payment.provider.in_(list(METHODS)),
            Payment.order_id.is_not(None),
        )
    )
    if payment is None or payment.order_id is None:
        raise HoldStateConflict(state.value, "take payment for")
    order = await get_order(session, payment.order_id, fan_id=None)
    return PaidSale(payment.id, hold_id, Tender.of(payment), order, repeated=True)


async def take_payment(
    session: AsyncSession,
    *,
    hold_id: uuid.UUID,
    staff_key_id: uuid.UUID,
    method: PaymentProvider | str,
    tendered_minor: int | None = None,
    reference: str | None = None,
) -> PaidSale:
    """Record a till's payment for its sale and confirm the sale, in the caller's transaction:
    a succeeded payment, the units sold, the order with one ticket per unit, the outbox facts.

    Cash needs ``tendered_minor`` (at least the total; the change due is the rest); a card
    paid on the till's terminal needs the terminal's ``reference``. Paying a paid sale again
    (a retry, a double click) takes nothing and answers with the first payment and its order:
    the hold row is locked first, so concurrent calls for one sale are serialised, and the
    database allows one live payment per hold.

    A sale past its deadline is still sold if its units are free (the same guarded sale as
    online); if someone else took them, nothing is sold and nothing is recorded.

    Raises:
        InvalidRequest: an unknown method, or fields missing or not belonging to it.
        HoldNotFound: no such hold, or another key's (indistinguishable).
        HoldStateConflict: the sale was abandoned (or is otherwise not payable).
        CashShort: less cash than the total; nothing recorded.
        SaleSeatsGone: the hold ran out and its seats were sold or held by someone else.
        InventoryBusy.
    """
    chosen = _method(method)
    cleaned_reference = _check_shape(chosen, tendered_minor, reference)
    hold, _ = await holds.lock_hold(session, hold_id, Owner(staff_key_id=staff_key_id))
    if hold.state == HoldState.CONFIRMED:
        return await _paid_sale(session, hold_id, hold.state)
    if hold.state not in PAYABLE:
        raise HoldStateConflict(hold.state.value, "take payment for")
    tender = _tender(chosen, hold.total_minor, hold.currency, tendered_minor, cleaned_reference)
    payment_id = await session.scalar(
        insert(Payment)
        .values(
            hold_id=hold_id,
            provider=chosen,
            state=PaymentState.SUCCEEDED,
            amount_minor=tender.amount_minor,
            currency=tender.currency,
            details=tender.details(),
        )
        .returning(Payment.id)
    )
    assert payment_id is not None
    confirmation = await confirm_hold(session, hold_id=hold_id, channel=OrderChannel.BOX_OFFICE)
    if confirmation.outcome != Outcome.CONFIRMED or confirmation.order_id is None:
        # No money changed hands yet at a till: the caller rolls back the payment row and the
        # refund bookkeeping ``confirm_hold`` wrote, and the buyer starts a new sale.
        raise SaleSeatsGone()
    await session.execute(
        update(Payment)
        .where(Payment.id == payment_id)
        .values(order_id=confirmation.order_id, updated_at=func.now())
    )
    order = await get_order(session, confirmation.order_id, fan_id=None)
    return PaidSale(payment_id, hold_id, tender, order, repeated=False)


async def box_office_order(
    session: AsyncSession, order_id: uuid.UUID, *, staff_key_id: uuid.UUID | None
) -> OrderView:
    """A box-office order with its lines and ticket ids: one sold by ``staff_key_id``, or
    with None (a supervisor) any box-office order. Online orders belong to their fans and
    are not found here.

    Raises:
        OrderNotFound: no such box-office order (for this key).
    """
    query = select(Order.id).where(Order.id == order_id, Order.channel == OrderChannel.BOX_OFFICE)
    if staff_key_id is not None:
        query = query.where(Order.staff_key_id == staff_key_id)
    if await session.scalar(query) is None:
        raise OrderNotFound()
    return await get_order(session, order_id, fan_id=None)


# --- the till's live seat map -----------------------------------------------------------------


class SeatState(enum.StrEnum):
    AVAILABLE = "available"  # a claim would take it now (a held seat past its deadline too)
    HELD = "held"  # in a live hold, a fan's or a till's
    SOLD = "sold"
    BLOCKED = "blocked"  # withheld from sale


@dataclass(frozen=True)
class TillTier:
    id: uuid.UUID
    name: str
    ga_area_id: uuid.UUID | None
    price_minor: int
    currency: str


@dataclass(frozen=True)
class TillSeat:
    id: int
    section: str
    row: str
    number: str
    x: float
    y: float
    accessible: bool
    tier_id: uuid.UUID
    price_minor: int
    currency: str
    state: SeatState


@dataclass(frozen=True)
class TillGATier:
    """One GA tier of one area: ``remaining`` a claim could take now, ``held`` in live holds."""

    area_id: uuid.UUID
    area_name: str
    tier_id: uuid.UUID
    tier_name: str
    price_minor: int
    currency: str
    remaining: int
    held: int
    sold: int


@dataclass(frozen=True)
class TillSeatmap:
    """An event's seats and GA tiers as the database has them at ``as_of`` (its clock)."""

    event_id: uuid.UUID
    status: str
    on_sale_now: bool
    as_of: dt.datetime
    tiers: tuple[TillTier, ...]
    seats: tuple[TillSeat, ...]
    ga: tuple[TillGATier, ...]


async def live_seatmap(session: AsyncSession, event_id: uuid.UUID) -> TillSeatmap:
    """Every seat of the event with its state, and each GA tier with what is left, read from
    the database now rather than from the fans' cached snapshot: a till must not offer a
    seat that went a moment ago. States follow the claim guard, so ``available`` is exactly
    what a sale could take now. Who holds or bought a seat is never part of it.

    Raises:
        EventNotFound: no such event, or a draft.
    """
    layout = await seatmap.load_layout(session, event_id)
    head = (
        await session.execute(select(Event.status, on_sale_now(), func.now()).where(Event.id == event_id))
    ).first()
    if head is None:
        raise EventNotFound()
    status, selling, as_of = head
    # Only the seats a claim would not take: usually far fewer than the free ones.
    taken = {
        seat_id: state
        for seat_id, state in (
            await session.execute(
                select(U.seat_id, U.state).where(
                    U.event_id == event_id, U.seat_id.is_not(None), not_(claimable())
                )
            )
        ).all()
    }
    live_hold = and_(U.state == UnitState.HELD, not_(claimable()))
    ga_counts = {
        (area, tier): (int(remaining), int(held), int(sold))
        for area, tier, remaining, held, sold in (
            await session.execute(
                select(
                    U.ga_area_id,
                    U.price_tier_id,
                    func.count().filter(claimable()),
                    func.count().filter(live_hold),
                    func.count().filter(U.state == UnitState.SOLD),
                )
                .where(U.event_id == event_id, U.ga_area_id.is_not(None))
                .group_by(U.ga_area_id, U.price_tier_id)
            )
        ).all()
    }
    tiers = {tier.id: tier for tier in layout.tiers}
    seats = tuple(
        TillSeat(
            id=seat.id,
            section=section.name,
            row=row.label,
            number=seat.number,
            x=seat.x,
            y=seat.y,
            accessible=seat.accessible,
            tier_id=seat.tier_id,
            price_minor=tiers[seat.tier_id].price_minor,
            currency=tiers[seat.tier_id].currency,
            state=SeatState(taken[seat.id].value) if seat.id in taken else SeatState.AVAILABLE,
        )
        for section in layout.sections
        for row in section.rows
        for seat in row.seats
    )
    ga = tuple(
        TillGATier(
            area.id,
            area.name,
            tier_id,
            tiers[tier_id].name,
            tiers[tier_id].price_minor,
            tiers[tier_id].currency,
            *ga_counts.get((area.id, tier_id), (0, 0, 0)),
        )
        for area in layout.ga_areas
        for tier_id in area.tier_ids
    )
    return TillSeatmap(
        event_id=event_id,
        status=status.value,
        on_sale_now=bool(selling),
        as_of=as_of,
        tiers=tuple(
            TillTier(tier.id, tier.name, tier.ga_area_id, tier.price_minor, tier.currency)
            for tier in layout.tiers
        ),
        seats=seats,
        ga=ga,
    )
