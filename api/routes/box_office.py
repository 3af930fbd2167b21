"""The box-office till: walk-up sales for staff keys with the box_office role (admin too).

A till never holds database credentials; everything it needs is here: the events it can sell,
a live seat map, a sale (a hold owned by the till's key), payment in cash or by card on the
till's terminal, and the order's tickets to print. A sale is visible only to the key that
started it; a supervisor (admin) may read any box-office order and its tickets.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.routes.holds import HoldOut, HoldRequest, Money, _selection, hold_out, policy_of
from api.routes.orders import OrderOut, TicketOut, order_out, ticket_out
from api.schemas import STORABLE_TEXT, VenueRef
from api.staff import BOX_OFFICE, STAFF_SECURITY, audit_detail
from booking.accounts.models import StaffRole
from booking.accounts.staff import StaffPrincipal
from booking.catalog import search
from booking.catalog import service as catalog
from booking.errors import TicketRevoked
from booking.payments import box_office
from booking.tickets import render
from booking.tickets import service as tickets


class StaffEventOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    title: str
    performer: str
    category: str
    city: str
    venue: VenueRef
    starts_at: dt.datetime
    timezone: str
    # on_sale, paused or off_sale
    status: str
    onsale_starts_at: dt.datetime
    onsale_ends_at: dt.datetime
    # A sale can be started now: on sale, inside the on-sale window.
    on_sale_now: bool
    price_from: Money | None


class StaffEventList(msgspec.Struct, frozen=True):
    items: list[StaffEventOut]
    next_cursor: str | None


class TillTierOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    kind: Literal["seated", "ga"]
    ga_area_id: uuid.UUID | None
    price: Money


SeatStateOut = Literal["available", "held", "sold", "blocked"]


class TillSeatOut(msgspec.Struct, frozen=True):
    id: int
    section: str
    row: str
    number: str
    x: float
    y: float
    accessible: bool
    tier_id: uuid.UUID
    price: Money
    # available: a sale could take it now; held: in someone's live hold; blocked: withheld.
    state: SeatStateOut


class TillGATierOut(msgspec.Struct, frozen=True):
    area_id: uuid.UUID
    area: str
    tier_id: uuid.UUID
    tier: str
    price: Money
    remaining: int
    held: int
    sold: int


class TillSeatmapOut(msgspec.Struct, frozen=True):
    """Read from the database at request time (never a cached snapshot); ``as_of`` is the
    database time of the states shown."""

    event_id: uuid.UUID
    status: str
    on_sale_now: bool
    as_of: dt.datetime
    tiers: list[TillTierOut]
    seats: list[TillSeatOut]
    ga: list[TillGATierOut]


TenderedMinor = Annotated[int, msgspec.Meta(ge=0, le=box_office.MAX_TENDERED_MINOR)]
TerminalReference = Annotated[
    str, msgspec.Meta(min_length=1, max_length=box_office.MAX_REFERENCE, pattern=STORABLE_TEXT)
]


class PaymentRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``{"method": "cash", "tendered_minor": N}`` with the cash handed over (at least the
    total), or ``{"method": "card_present", "reference": "..."}`` with the reference the card
    terminal printed."""

    method: Literal["cash", "card_present"]
    tendered_minor: TenderedMinor | None = None
    reference: TerminalReference | None = None


class TillPaymentOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    method: str
    amount: Money
    tendered: Money | None
    change_due: Money | None
    reference: str | None


class PaidSaleOut(msgspec.Struct, frozen=True):
    """``repeated`` is true when the sale had been paid already (a retry): nothing new was
    taken and this is the first payment's answer."""

    hold_id: uuid.UUID
    payment: TillPaymentOut
    # Cash only: what to hand back.
    change_due: Money | None
    order: OrderOut
    ticket_ids: list[uuid.UUID]
    repeated: bool


def _reader(staff: StaffPrincipal) -> uuid.UUID | None:
    """Whose box-office orders this key may read: its own, or any for a supervisor."""
    return None if staff.role == StaffRole.ADMIN else staff.id


def _event_out(e: catalog.EventSummary) -> StaffEventOut:
    return StaffEventOut(
        id=e.id,
        title=e.title,
        performer=e.performer,
        category=e.category,
        city=e.city,
        venue=VenueRef(id=e.venue_id, name=e.venue_name),
        starts_at=e.starts_at,
        timezone=e.timezone,
        status=e.status,
        onsale_starts_at=e.onsale_starts_at,
        onsale_ends_at=e.onsale_ends_at,
        on_sale_now=e.on_sale_now,
        price_from=(
            Money(e.price_from_minor, e.currency)
            if e.price_from_minor is not None and e.currency is not None
            else None
        ),
    )


def _seatmap_out(m: box_office.TillSeatmap) -> TillSeatmapOut:
    return TillSeatmapOut(
        event_id=m.event_id,
        status=m.status,
        on_sale_now=m.on_sale_now,
        as_of=m.as_of,
        tiers=[
            TillTierOut(
                id=t.id,
                name=t.name,
                kind="ga" if t.ga_area_id is not None else "seated",
                ga_area_id=t.ga_area_id,
                price=Money(t.price_minor, t.currency),
            )
            for t in m.tiers
        ],
        seats=[
            TillSeatOut(
                id=s.id,
                section=s.section,
                row=s.row,
                number=s.number,
                x=s.x,
                y=s.y,
                accessible=s.accessible,
                tier_id=s.tier_id,
                price=Money(s.price_minor, s.currency),
                state=s.state.value,
            )
            for s in m.seats
        ],
        ga=[
            TillGATierOut(
                area_id=g.area_id,
                area=g.area_name,
                tier_id=g.tier_id,
                tier=g.tier_name,
                price=Money(g.price_minor, g.currency),
                remaining=g.remaining,
                held=g.held,
                sold=g.sold,
            )
            for g in m.ga
        ],
    )


def _paid_out(paid: box_office.PaidSale) -> PaidSaleOut:
    tender = paid.tender
    change = Money(tender.change_minor, tender.currency) if tender.change_minor is not None else None
    return PaidSaleOut(
        hold_id=paid.hold_id,
        payment=TillPaymentOut(
            id=paid.payment_id,
            method=tender.method.value,
            amount=Money(tender.amount_minor, tender.currency),
            tendered=(
                Money(tender.tendered_minor, tender.currency) if tender.tendered_minor is not None else None
            ),
            change_due=change,
            reference=tender.reference,
        ),
        change_due=change,
        order=order_out(paid.order),
        ticket_ids=[line.ticket_id for line in paid.order.lines if line.ticket_id is not None],
        repeated=paid.repeated,
    )


_SELLS = {"roles": BOX_OFFICE}


class BoxOfficeController(Controller):
    path = "/staff"
    tags = ["box office"]
    security = STAFF_SECURITY

    @get(
        "/events",
        summary="Events a till can sell",
        description=(
            "Events on sale, paused or taken off sale that have not ended, soonest first (best match "
            "first with `q`). `on_sale_now` says whether a sale can be started now. Page with "
            "`next_cursor`."
        ),
        opt=_SELLS,
    )
    async def events(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        q: Annotated[
            str | None,
            Parameter(pattern=STORABLE_TEXT, max_length=search.MAX_KEYWORD_LENGTH, description="Keywords"),
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=catalog.MAX_PAGE, description="Page size")] = 20,
        cursor: Annotated[
            str | None,
            Parameter(
                pattern=STORABLE_TEXT, max_length=200, description="next_cursor from the previous page"
            ),
        ] = None,
    ) -> StaffEventList:
        page = await catalog.list_events(
            db_session, search.EventFilters.parse(q=q), limit=limit, cursor=cursor
        )
        return StaffEventList(items=[_event_out(e) for e in page.items], next_cursor=page.next_cursor)

    @get(
        "/events/{event_id:uuid}/seatmap",
        summary="The live seat map for a till",
        description=(
            "Every seat with section, row, number, map position, tier, price and state "
            "(`available`, `held`, `sold` or `blocked`; never who holds it), and each GA tier with "
            "what remains. Read from the database at request time, unlike the fans' cached map."
        ),
        opt=_SELLS,
    )
    async def seatmap(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
    ) -> TillSeatmapOut:
        return _seatmap_out(await box_office.live_seatmap(db_session, event_id))

    @post(
        "/sales",
        status_code=201,
        summary="Start a walk-up sale",
        description=(
            "Holds `seat_ids` (all or none) or `quantity` places of the GA tier `tier_id` for this "
            "till, like a fan's hold but without the per-fan cap. Answers the hold with its items, "
            "total and `expires_at`. An `Idempotency-Key` header makes a retry return the same sale."
        ),
        opt={**_SELLS, "audit": "sale.hold", "audit_target": "sale"},
    )
    async def start(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        data: JSONBody[HoldRequest],
    ) -> HoldOut:
        audit_detail(request, event_id=str(data.event_id))
        view = await box_office.start_sale(
            db_session,
            staff_key_id=staff.id,
            event_id=data.event_id,
            selection=_selection(data),
            policy=policy_of(request),
        )
        audit_detail(
            request,
            target_id=str(view.id),
            quantity=view.quantity,
            total_minor=view.total_minor,
            currency=view.currency,
        )
        return hold_out(view)

    @get("/sales/{hold_id:uuid}", summary="A sale of this till", opt=_SELLS)
    async def show(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        hold_id: FromPath[uuid.UUID],
    ) -> HoldOut:
        return hold_out(await box_office.get_sale(db_session, hold_id=hold_id, staff_key_id=staff.id))

    @delete(
        "/sales/{hold_id:uuid}",
        status_code=200,
        summary="Abandon a sale",
        description="Its seats go back on sale at once. Repeating changes nothing; a paid sale answers 409.",
        opt={**_SELLS, "audit": "sale.abandon", "audit_target": "sale"},
    )
    async def abandon(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        hold_id: FromPath[uuid.UUID],
    ) -> HoldOut:
        return hold_out(await box_office.abandon_sale(db_session, hold_id, staff.id))

    @post(
        "/sales/{hold_id:uuid}/payment",
        status_code=200,
        summary="Take payment for a sale",
        description=(
            "Cash (`tendered_minor` at least the total; the answer has the change due) or a card "
            "paid on the till's terminal (`reference`). Records the payment and confirms the sale "
            "at once: the answer is the order with its tickets. Paying a paid sale again takes "
            "nothing and answers the same order (`repeated: true`). Too little cash answers 409 "
            "`cash-short`; a sale whose hold ran out and whose seats were taken answers 409 "
            "`sale-seats-gone`; in both cases nothing is recorded."
        ),
        opt={**_SELLS, "audit": "sale.pay", "audit_target": "sale"},
    )
    async def pay(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        hold_id: FromPath[uuid.UUID],
        data: JSONBody[PaymentRequest],
    ) -> PaidSaleOut:
        audit_detail(request, method=data.method)
        if data.tendered_minor is not None:
            audit_detail(request, tendered_minor=data.tendered_minor)
        paid = await box_office.take_payment(
            db_session,
            hold_id=hold_id,
            staff_key_id=staff.id,
            method=data.method,
            tendered_minor=data.tendered_minor,
            reference=data.reference,
        )
        tender = paid.tender
        audit_detail(
            request,
            order_id=str(paid.order.id),
            amount_minor=tender.amount_minor,
            currency=tender.currency,
            change_due_minor=tender.change_minor,
            repeated=paid.repeated,
        )
        return _paid_out(paid)

    @get("/orders/{order_id:uuid}", summary="A box-office order, with its tickets", opt=_SELLS)
    async def order(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        order_id: FromPath[uuid.UUID],
    ) -> OrderOut:
        view = await box_office.box_office_order(db_session, order_id, staff_key_id=_reader(staff))
        return order_out(view)

    async def _ticket(
        self,
        request: Request[Any, Any, Any],
        session: AsyncSession,
        staff: StaffPrincipal,
        ticket_id: uuid.UUID,
    ) -> tickets.TicketView:
        return await tickets.box_office_ticket_view(
            session,
            ticket_id,
            staff_key_id=_reader(staff),
            signing_key=request.app.state.signing_keys.ticket_key,
        )

    @get("/tickets/{ticket_id:uuid}", summary="A box-office ticket, with its signed code", opt=_SELLS)
    async def ticket(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        ticket_id: FromPath[uuid.UUID],
    ) -> TicketOut:
        return ticket_out(await self._ticket(request, db_session, staff, ticket_id))

    @get(
        "/tickets/{ticket_id:uuid}/qr.svg",
        summary="A box-office ticket's QR code",
        media_type="image/svg+xml",
        opt=_SELLS,
    )
    async def qr(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        ticket_id: FromPath[uuid.UUID],
    ) -> Response[str]:
        view = await self._ticket(request, db_session, staff, ticket_id)
        if view.token is None:
            raise TicketRevoked()
        return Response(render.render_qr_svg(view.token), media_type="image/svg+xml")

    @get(
        "/tickets/{ticket_id:uuid}/ticket.pdf",
        summary="A box-office ticket as a PDF, to print",
        media_type="application/pdf",
        opt=_SELLS,
    )
    async def pdf(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        ticket_id: FromPath[uuid.UUID],
    ) -> Response[bytes]:
        view = await self._ticket(request, db_session, staff, ticket_id)
        return Response(
            render.render_ticket_pdf(view),
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="ticket-{view.ticket_id}.pdf"'},
        )
