"""Walk-up sales against real PostgreSQL: cash with change, short cash, card on the till's
terminal, retries, abandoned and expired sales, GA, the live seat map, and who may read a
box-office order and its tickets."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.errors import (
    CashShort,
    HoldNotFound,
    HoldStateConflict,
    InvalidRequest,
    OrderNotFound,
    SaleSeatsGone,
    TicketNotFound,
)
from booking.holds import service as holds
from booking.holds.models import HoldState
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection
from booking.keys import SigningKeys, load_signing_keys
from booking.ops import service as ops
from booking.orders.service import confirm_hold
from booking.payments import box_office
from booking.payments import service as payments
from booking.payments.box_office import SeatState
from booking.payments.models import PaymentProvider
from booking.settings import Settings
from booking.tickets.service import box_office_ticket_view, ticket_view
from booking.tickets.signing import verify
from tests.factories import SmallEvent, advance_clock, make_event, make_fan

POLICY = HoldPolicy()
SEAT_PRICE = 5000  # make_event's seated tier, GBP
GA_PRICE = 3000


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=5)


async def _key(session: AsyncSession, role: StaffRole = StaffRole.BOX_OFFICE) -> uuid.UUID:
    issued = await create_key(session, f"till-{uuid.uuid4().hex[:8]}", role)
    await session.commit()
    return issued.id


@pytest.fixture
async def till(session: AsyncSession) -> uuid.UUID:
    return await _key(session)


async def _sale(session: AsyncSession, till: uuid.UUID, event: SmallEvent, seats: list[int]) -> uuid.UUID:
    view = await box_office.start_sale(
        session,
        staff_key_id=till,
        event_id=event.event_id,
        selection=SeatSelection(tuple(seats)),
        policy=POLICY,
    )
    await session.commit()
    return view.id


async def _count(session: AsyncSession, sql: str, **params: object) -> int:
    return int(await session.scalar(text(sql), params) or 0)


async def _unit_states(session: AsyncSession, seat_ids: list[int]) -> list[str]:
    rows = await session.execute(
        text("SELECT state FROM inventory_units WHERE seat_id = ANY(:s) ORDER BY seat_id"), {"s": seat_ids}
    )
    return [str(state) for (state,) in rows.all()]


async def test_cash_with_change_sells_and_records_the_tender(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    seats = event.seat_ids[:2]
    hold_id = await _sale(session, till, event, seats)

    paid = await box_office.take_payment(
        session, hold_id=hold_id, staff_key_id=till, method="cash", tendered_minor=12_000
    )
    await session.commit()

    assert paid.repeated is False
    assert paid.tender.method == PaymentProvider.CASH
    assert (paid.tender.amount_minor, paid.tender.tendered_minor, paid.tender.change_minor) == (
        2 * SEAT_PRICE,
        12_000,
        2_000,
    )
    assert paid.order.channel == "box_office"
    assert paid.order.state == "confirmed"
    assert [line.seat_id for line in paid.order.lines] == seats
    assert all(line.ticket_id is not None for line in paid.order.lines)
    assert await _unit_states(session, seats) == ["sold", "sold"]
    row = (
        await session.execute(
            text(
                "SELECT p.provider, p.state, p.amount_minor, p.details, p.order_id, o.staff_key_id, o.fan_id"
                " FROM payments p JOIN orders o ON o.id = p.order_id WHERE p.hold_id = :h"
            ),
            {"h": hold_id},
        )
    ).one()
    assert row[:3] == ("cash", "succeeded", 2 * SEAT_PRICE)
    assert row[3] == {"tendered_minor": 12_000, "change_minor": 2_000}
    assert (row[4], row[5], row[6]) == (paid.order.id, till, None)
    assert (await holds.get_hold(session, hold_id)).state == HoldState.CONFIRMED


async def test_exact_cash_gives_no_change(session: AsyncSession, till: uuid.UUID, event: SmallEvent) -> None:
    hold_id = await _sale(session, till, event, event.seat_ids[:1])
    paid = await box_office.take_payment(
        session, hold_id=hold_id, staff_key_id=till, method=PaymentProvider.CASH, tendered_minor=SEAT_PRICE
    )
    assert paid.tender.change_minor == 0


async def test_short_cash_is_refused_naming_the_shortfall_and_records_nothing(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    seats = event.seat_ids[:2]
    hold_id = await _sale(session, till, event, seats)

    with pytest.raises(CashShort) as refused:
        await box_office.take_payment(
            session, hold_id=hold_id, staff_key_id=till, method="cash", tendered_minor=9_950
        )
    await session.rollback()

    assert refused.value.extra["shortfall_minor"] == 50
    assert refused.value.extra["total_minor"] == 2 * SEAT_PRICE
    assert "0.50 GBP short" in refused.value.detail
    assert await _count(session, "SELECT count(*) FROM payments") == 0
    assert await _count(session, "SELECT count(*) FROM orders") == 0
    assert (await holds.get_hold(session, hold_id)).state == HoldState.ACTIVE
    assert await _unit_states(session, seats) == ["held", "held"]
    # The till collects the rest and tries again: the same sale goes through.
    paid = await box_office.take_payment(
        session, hold_id=hold_id, staff_key_id=till, method="cash", tendered_minor=10_000
    )
    assert paid.tender.change_minor == 0


async def test_card_present_records_the_terminal_reference(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    hold_id = await _sale(session, till, event, event.seat_ids[:1])
    paid = await box_office.take_payment(
        session, hold_id=hold_id, staff_key_id=till, method="card_present", reference="  AUTH 0042-77 "
    )
    await session.commit()

    assert paid.tender.method == PaymentProvider.CARD_PRESENT
    assert paid.tender.reference == "AUTH 0042-77"
    assert (paid.tender.tendered_minor, paid.tender.change_minor) == (None, None)
    details = await session.scalar(text("SELECT details FROM payments WHERE hold_id = :h"), {"h": hold_id})
    assert details == {"reference": "AUTH 0042-77"}


@pytest.mark.parametrize(
    ("method", "tendered", "reference"),
    [
        ("card_present", None, None),
        ("card_present", None, "   "),
        ("card_present", 5000, "AUTH 1"),
        ("card_present", None, "x" * (box_office.MAX_REFERENCE + 1)),
        ("cash", None, None),
        ("cash", -1, None),
        ("cash", 5000, "AUTH 1"),
        ("offline", 5000, None),
        ("stripe", None, "pi_123"),
        ("cheque", 5000, None),
    ],
)
async def test_a_malformed_tender_is_refused_before_anything_changes(
    session: AsyncSession,
    till: uuid.UUID,
    event: SmallEvent,
    method: str,
    tendered: int | None,
    reference: str | None,
) -> None:
    hold_id = await _sale(session, till, event, event.seat_ids[:1])
    with pytest.raises(InvalidRequest):
        await box_office.take_payment(
            session,
            hold_id=hold_id,
            staff_key_id=till,
            method=method,
            tendered_minor=tendered,
            reference=reference,
        )
    await session.rollback()
    assert await _count(session, "SELECT count(*) FROM payments") == 0
    assert (await holds.get_hold(session, hold_id)).state == HoldState.ACTIVE


async def test_a_retry_answers_the_same_order_and_takes_one_payment(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    hold_id = await _sale(session, till, event, event.seat_ids[:2])
    first = await box_office.take_payment(
        session, hold_id=hold_id, staff_key_id=till, method="cash", tendered_minor=20_000
    )
    await session.commit()
    # The till retries after a lost answer, even with another tender typed in.
    again = await box_office.take_payment(
        session, hold_id=hold_id, staff_key_id=till, method="card_present", reference="AUTH 9"
    )
    await session.commit()

    assert again.repeated is True
    assert again.order.id == first.order.id
    assert again.payment_id == first.payment_id
    assert again.tender == first.tender
    assert [line.ticket_id for line in again.order.lines] == [line.ticket_id for line in first.order.lines]
    assert await _count(session, "SELECT count(*) FROM payments") == 1
    assert await _count(session, "SELECT count(*) FROM orders") == 1
    assert await _count(session, "SELECT count(*) FROM tickets") == 2


async def test_an_abandoned_sale_frees_its_seats_at_once(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    seats = event.seat_ids[:2]
    hold_id = await _sale(session, till, event, seats)
    released = await box_office.abandon_sale(session, hold_id, till)
    await session.commit()

    assert released.state == HoldState.RELEASED
    assert await _unit_states(session, seats) == ["available", "available"]
    again = await box_office.abandon_sale(session, hold_id, till)
    assert again.state == HoldState.RELEASED
    # Paying an abandoned sale is refused: the till starts a new one.
    with pytest.raises(HoldStateConflict):
        await box_office.take_payment(
            session, hold_id=hold_id, staff_key_id=till, method="cash", tendered_minor=10_000
        )
    await session.rollback()
    fan = Owner(fan_id=await make_fan(session))
    taken = await holds.create_hold(
        session, owner=fan, event_id=event.event_id, selection=SeatSelection(tuple(seats)), policy=POLICY
    )
    await session.commit()
    assert len(taken.items) == 2


async def test_a_paid_sale_cannot_be_abandoned(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    hold_id = await _sale(session, till, event, event.seat_ids[:1])
    await box_office.take_payment(
        session, hold_id=hold_id, staff_key_id=till, method="cash", tendered_minor=SEAT_PRICE
    )
    await session.commit()
    with pytest.raises(HoldStateConflict):
        await box_office.abandon_sale(session, hold_id, till)
    await session.rollback()
    assert await _unit_states(session, event.seat_ids[:1]) == ["sold"]


async def test_an_expired_sale_whose_seats_a_fan_took_is_refused_and_records_nothing(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    seats = event.seat_ids[:2]
    hold_id = await _sale(session, till, event, seats)
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    fan = Owner(fan_id=await make_fan(session))
    fan_hold = await holds.create_hold(
        session, owner=fan, event_id=event.event_id, selection=SeatSelection((seats[1],)), policy=POLICY
    )
    await session.commit()

    with pytest.raises(SaleSeatsGone) as refused:
        await box_office.take_payment(
            session, hold_id=hold_id, staff_key_id=till, method="cash", tendered_minor=10_000
        )
    await session.rollback()

    assert "no payment was recorded" in refused.value.detail
    assert await _count(session, "SELECT count(*) FROM payments") == 0
    assert await _count(session, "SELECT count(*) FROM orders") == 0
    assert await _count(session, "SELECT count(*) FROM refunds") == 0
    assert (await holds.get_hold(session, fan_hold.id)).state == HoldState.ACTIVE
    assert (
        await _count(session, "SELECT count(*) FROM inventory_units WHERE hold_id = :h", h=fan_hold.id) == 1
    )


async def test_an_expired_sale_whose_seats_are_still_free_is_sold(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    seats = event.seat_ids[:2]
    hold_id = await _sale(session, till, event, seats)
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    assert await holds.expire_hold(session, hold_id)
    await session.commit()

    paid = await box_office.take_payment(
        session, hold_id=hold_id, staff_key_id=till, method="card_present", reference="AUTH 5"
    )
    await session.commit()
    assert paid.order.state == "confirmed"
    assert await _unit_states(session, seats) == ["sold", "sold"]


async def test_a_ga_sale(session: AsyncSession, till: uuid.UUID, event: SmallEvent) -> None:
    view = await box_office.start_sale(
        session,
        staff_key_id=till,
        event_id=event.event_id,
        selection=GASelection(event.ga_tier_id, 3),
        policy=POLICY,
    )
    await session.commit()
    assert (view.quantity, view.total_minor) == (3, 3 * GA_PRICE)
    (ga,) = (await box_office.live_seatmap(session, event.event_id)).ga
    assert (ga.remaining, ga.held, ga.sold) == (2, 3, 0)

    paid = await box_office.take_payment(
        session, hold_id=view.id, staff_key_id=till, method="cash", tendered_minor=10_000
    )
    await session.commit()
    assert paid.tender.change_minor == 10_000 - 3 * GA_PRICE
    assert len(paid.order.lines) == 3
    assert all(line.seat_id is None for line in paid.order.lines)
    (ga,) = (await box_office.live_seatmap(session, event.event_id)).ga
    assert (ga.remaining, ga.held, ga.sold) == (2, 0, 3)


async def test_a_till_sale_is_not_capped_like_a_fan(session: AsyncSession, till: uuid.UUID) -> None:
    big = await make_event(session, seats=12, ga_capacity=1)
    policy = HoldPolicy(tickets_per_fan=4)
    view = await box_office.start_sale(
        session,
        staff_key_id=till,
        event_id=big.event_id,
        selection=SeatSelection(tuple(big.seat_ids[:10])),
        policy=policy,
    )
    assert view.quantity == 10


async def test_another_key_cannot_see_pay_or_abandon_a_sale(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    other = await _key(session)
    hold_id = await _sale(session, till, event, event.seat_ids[:1])
    with pytest.raises(HoldNotFound):
        await box_office.get_sale(session, hold_id=hold_id, staff_key_id=other)
    with pytest.raises(HoldNotFound):
        await box_office.take_payment(
            session, hold_id=hold_id, staff_key_id=other, method="cash", tendered_minor=SEAT_PRICE
        )
    await session.rollback()
    with pytest.raises(HoldNotFound):
        await box_office.abandon_sale(session, hold_id, other)
    await session.rollback()
    assert await _count(session, "SELECT count(*) FROM payments") == 0
    assert (await box_office.get_sale(session, hold_id=hold_id, staff_key_id=till)).state == HoldState.ACTIVE


async def test_a_fan_hold_is_not_a_sale(session: AsyncSession, till: uuid.UUID, event: SmallEvent) -> None:
    fan = Owner(fan_id=await make_fan(session))
    fan_hold = await holds.create_hold(
        session,
        owner=fan,
        event_id=event.event_id,
        selection=SeatSelection((event.seat_ids[0],)),
        policy=POLICY,
    )
    await session.commit()
    with pytest.raises(HoldNotFound):
        await box_office.take_payment(
            session, hold_id=fan_hold.id, staff_key_id=till, method="cash", tendered_minor=SEAT_PRICE
        )


async def test_the_live_seat_map_shows_held_sold_and_blocked_at_once(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent
) -> None:
    s = event.seat_ids
    sold_sale = await _sale(session, till, event, [s[0]])
    await box_office.take_payment(
        session, hold_id=sold_sale, staff_key_id=till, method="cash", tendered_minor=SEAT_PRICE
    )
    fan = Owner(fan_id=await make_fan(session))
    await holds.create_hold(
        session, owner=fan, event_id=event.event_id, selection=SeatSelection((s[1],)), policy=POLICY
    )
    await session.execute(
        text("UPDATE inventory_units SET state = 'blocked' WHERE seat_id = :s"), {"s": s[2]}
    )
    await session.commit()
    # Read at once: no outbox relay or snapshot rebuild stands between a sale and the map.
    live = await box_office.live_seatmap(session, event.event_id)

    states = {seat.id: seat.state for seat in live.seats}
    assert states == {
        s[0]: SeatState.SOLD,
        s[1]: SeatState.HELD,
        s[2]: SeatState.BLOCKED,
        **{seat: SeatState.AVAILABLE for seat in s[3:]},
    }
    first = live.seats[0]
    assert (first.section, first.row, first.number, first.x, first.y) == ("Stalls", "A", "1", 0.0, 0.0)
    assert (first.tier_id, first.price_minor, first.currency) == (event.seat_tier_id, SEAT_PRICE, "GBP")
    assert live.on_sale_now is True
    assert {tier.id for tier in live.tiers} == {event.seat_tier_id, event.ga_tier_id}
    (ga,) = live.ga
    assert (ga.tier_id, ga.area_id, ga.remaining, ga.held, ga.sold) == (
        event.ga_tier_id,
        event.ga_area_id,
        5,
        0,
        0,
    )

    # A hold past its deadline shows as available: a sale could take the seat now.
    await advance_clock(session, POLICY.ttl.total_seconds() + 1)
    live = await box_office.live_seatmap(session, event.event_id)
    assert {seat.id: seat.state for seat in live.seats}[s[1]] == SeatState.AVAILABLE


@pytest.fixture
def keys(settings: Settings) -> SigningKeys:
    return load_signing_keys(settings)


async def test_box_office_orders_and_tickets_are_read_by_their_till_or_an_admin(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent, keys: SigningKeys
) -> None:
    other = await _key(session)
    hold_id = await _sale(session, till, event, event.seat_ids[:1])
    paid = await box_office.take_payment(
        session, hold_id=hold_id, staff_key_id=till, method="cash", tendered_minor=SEAT_PRICE
    )
    await session.commit()
    (ticket_id,) = [line.ticket_id for line in paid.order.lines]
    assert ticket_id is not None

    assert (await box_office.box_office_order(session, paid.order.id, staff_key_id=till)).id == paid.order.id
    assert (await box_office.box_office_order(session, paid.order.id, staff_key_id=None)).id == paid.order.id
    with pytest.raises(OrderNotFound):
        await box_office.box_office_order(session, paid.order.id, staff_key_id=other)

    view = await box_office_ticket_view(session, ticket_id, staff_key_id=till, signing_key=keys.ticket_key)
    assert view.order_id == paid.order.id
    assert view.token is not None
    assert verify(view.token, keys.ticket_public_key).ticket_id == ticket_id
    assert (
        await box_office_ticket_view(session, ticket_id, staff_key_id=None, signing_key=keys.ticket_key)
    ).token == view.token
    with pytest.raises(TicketNotFound):
        await box_office_ticket_view(session, ticket_id, staff_key_id=other, signing_key=keys.ticket_key)
    # A fan id never reaches a walk-up ticket: the fan check is unchanged.
    with pytest.raises(TicketNotFound):
        await ticket_view(session, ticket_id, await make_fan(session), signing_key=keys.ticket_key)


async def test_online_orders_and_tickets_are_not_reached_through_the_box_office(
    session: AsyncSession, event: SmallEvent, keys: SigningKeys
) -> None:
    fan_id = await make_fan(session)
    fan_hold = await holds.create_hold(
        session,
        owner=Owner(fan_id=fan_id),
        event_id=event.event_id,
        selection=SeatSelection((event.seat_ids[0],)),
        policy=POLICY,
    )
    confirmation = await confirm_hold(session, hold_id=fan_hold.id)
    await session.commit()
    assert confirmation.order_id is not None
    ticket_id = await session.scalar(
        text("SELECT id FROM tickets WHERE order_id = :o"), {"o": confirmation.order_id}
    )
    assert ticket_id is not None

    with pytest.raises(OrderNotFound):
        await box_office.box_office_order(session, confirmation.order_id, staff_key_id=None)
    with pytest.raises(TicketNotFound):
        await box_office_ticket_view(session, ticket_id, staff_key_id=None, signing_key=keys.ticket_key)
    assert (await ticket_view(session, ticket_id, fan_id, signing_key=keys.ticket_key)).token is not None


@pytest.mark.parametrize(
    ("method", "tender"), [("cash", {"tendered_minor": 10_000}), ("card_present", {"reference": "T-77"})]
)
async def test_refunding_a_till_order_leaves_no_refund_for_the_job(
    session: AsyncSession, till: uuid.UUID, event: SmallEvent, method: str, tender: dict[str, object]
) -> None:
    # A till payment goes back in person: recorded as paid back there (a pending row no job
    # or provider could make would stay pending for ever).
    hold_id = await _sale(session, till, event, event.seat_ids[:1])
    paid = await box_office.take_payment(session, hold_id=hold_id, staff_key_id=till, method=method, **tender)
    await session.commit()
    refunded = await ops.refund_order_by_staff(session, paid.order.id)
    await session.commit()
    assert not refunded.refund_recorded
    assert refunded.order.state == "refunded"
    rows = await session.execute(
        text(
            "SELECT r.state, r.reason, r.amount_minor = p.amount_minor FROM refunds r"
            " JOIN payments p ON p.id = r.payment_id WHERE p.hold_id = :h"
        ),
        {"h": hold_id},
    )
    assert [tuple(r) for r in rows] == [("succeeded", payments.IN_PERSON, True)]
    assert await payments.pending_refunds(session) == []
    assert await _unit_states(session, event.seat_ids[:1]) == ["available"]
