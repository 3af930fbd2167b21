"""Catalog administration over HTTP (role ``admin``): venues to build on, and events: create,
change, price, put on sale, take off sale, cancel.

Each handler parses, calls ``booking.catalog.admin`` and renders; the same verbs back the
``boxoffice events`` commands and the console's Events screen. Every change is audited by
``api.staff`` (one row per request, whatever its outcome). On-call's pause and resume stay
at ``/staff/events/{event_id}/pause|resume``; an event's waiting room at
``/staff/events/{event_id}/waiting-room``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.routes.holds import Money, policy_of
from api.schemas import STORABLE_TEXT
from api.staff import STAFF_SECURITY, audit_detail
from booking.accounts.models import StaffRole
from booking.accounts.staff import StaffPrincipal
from booking.catalog import admin, pricing
from booking.catalog.models import Category

ADMIN_ONLY = (StaffRole.ADMIN,)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=pricing.MAX_TIER_NAME, pattern=STORABLE_TEXT)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=admin.MAX_TITLE, pattern=STORABLE_TEXT)]
Description = Annotated[str, msgspec.Meta(max_length=admin.MAX_DESCRIPTION, pattern=STORABLE_TEXT)]
Ref = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=STORABLE_TEXT)]
Zone = Annotated[str, msgspec.Meta(min_length=1, max_length=admin.MAX_TIMEZONE, pattern=STORABLE_TEXT)]
Slug = Annotated[str, msgspec.Meta(min_length=1, max_length=admin.MAX_SLUG, pattern=admin.SLUG.pattern)]
Currency = Annotated[str, msgspec.Meta(pattern=admin.CURRENCY.pattern)]
PriceMinor = Annotated[int, msgspec.Meta(ge=0, le=pricing.MAX_PRICE_MINOR)]
SeatId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
FanCap = Annotated[int, msgspec.Meta(ge=1, le=admin.MAX_FAN_CAP)]
HoldTtl = Annotated[int, msgspec.Meta(ge=admin.HOLD_TTL_SECONDS[0], le=admin.HOLD_TTL_SECONDS[1])]
When = Annotated[dt.datetime, msgspec.Meta(description="ISO 8601; without an offset, the event's own time")]


class RowIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    section: Name
    row: Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=STORABLE_TEXT)]


class TierIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tier sells seats (whole ``sections``, ``rows`` of a section, single ``seat_ids``, in
    any mix) or places of one ``ga_area`` (all its capacity, or ``quantity`` of it)."""

    name: Name
    price_minor: PriceMinor
    sections: Annotated[list[Name], msgspec.Meta(max_length=500)] = []
    rows: Annotated[list[RowIn], msgspec.Meta(max_length=pricing.MAX_ROWS)] = []
    seat_ids: Annotated[list[SeatId], msgspec.Meta(max_length=pricing.MAX_SEAT_IDS)] = []
    ga_area: Name | None = None
    quantity: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None


Tiers = Annotated[list[TierIn], msgspec.Meta(max_length=pricing.MAX_TIERS)]


class EventIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``venue``: its id or slug; ``layout``: its id or name (left out: the venue's only one).
    ``ends_at`` defaults to three hours after ``starts_at``, ``onsale_ends_at`` to
    ``starts_at``, ``timezone`` to the venue's. ``layout_prices`` prices the tiers the
    layout declares (by name) instead of giving ``tiers``. ``currency`` is needed with either."""

    title: Title
    performer: Title
    category: Category
    venue: Ref
    starts_at: When
    onsale_starts_at: When
    layout: Ref | None = None
    ends_at: When | None = None
    onsale_ends_at: When | None = None
    timezone: Zone | None = None
    description: Description = ""
    slug: Slug | None = None
    currency: Currency | None = None
    tiers: Tiers = []
    max_tickets_per_fan: FanCap | None = None
    hold_ttl_seconds: HoldTtl | None = None
    layout_prices: Annotated[dict[Name, PriceMinor], msgspec.Meta(max_length=pricing.MAX_TIERS)] | None = None


class EventPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Only the fields given change. ``null`` for ``max_tickets_per_fan`` or
    ``hold_ttl_seconds`` goes back to the configured value."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    performer: Title | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    category: Category | msgspec.UnsetType = msgspec.UNSET
    timezone: Zone | msgspec.UnsetType = msgspec.UNSET
    starts_at: When | msgspec.UnsetType = msgspec.UNSET
    ends_at: When | msgspec.UnsetType = msgspec.UNSET
    onsale_starts_at: When | msgspec.UnsetType = msgspec.UNSET
    onsale_ends_at: When | msgspec.UnsetType = msgspec.UNSET
    max_tickets_per_fan: FanCap | msgspec.UnsetType | None = msgspec.UNSET
    hold_ttl_seconds: HoldTtl | msgspec.UnsetType | None = msgspec.UNSET


class TiersIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every tier of the event, replacing the ones it has (or ``layout_prices``: the layout's
    own tiers, priced by name); ``currency`` defaults to theirs."""

    tiers: Tiers = []
    currency: Currency | None = None
    layout_prices: Annotated[dict[Name, PriceMinor], msgspec.Meta(max_length=pricing.MAX_TIERS)] | None = None


class PriceIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The tier's id or its name.
    tier: Name
    price_minor: PriceMinor


class PricesIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    prices: Annotated[list[PriceIn], msgspec.Meta(min_length=1, max_length=pricing.MAX_TIERS)]


class OnSaleIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Open the sale now rather than at the event's on-sale time.
    open_now: bool = False


class CoverageOut(msgspec.Struct, frozen=True):
    # A section (its seats in the tier) or a GA area (its places in the tier).
    name: str
    places: int


class TierOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    price: Money
    kind: str
    ga_area_id: uuid.UUID | None
    places: int
    available: int
    held: int
    sold: int
    covers: list[CoverageOut]


class EventAdminOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    slug: str
    title: str
    performer: str
    description: str
    category: str
    venue_id: uuid.UUID
    venue_name: str
    layout_id: uuid.UUID
    layout_name: str
    city: str
    timezone: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    onsale_starts_at: dt.datetime
    onsale_ends_at: dt.datetime
    # What people decided: draft, on_sale, paused, off_sale, cancelled, completed.
    status: str
    # What fans see now: draft, scheduled, on_sale, sold_out, paused, off_sale, ended, cancelled.
    phase: str
    max_tickets_per_fan: int | None
    hold_ttl_seconds: int | None
    created_at: dt.datetime
    currency: str | None
    places: int
    sold: int
    held: int
    # What cancelling now would refund: paid orders, and payments still in flight.
    paid_orders: int
    payments_in_flight: int
    tiers: list[TierOut]


class EventRowOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    slug: str
    title: str
    performer: str
    venue_name: str
    city: str
    starts_at: dt.datetime
    timezone: str
    onsale_starts_at: dt.datetime
    onsale_ends_at: dt.datetime
    status: str
    phase: str
    places: int
    sold: int
    paid_orders: int


class EventRowList(msgspec.Struct, frozen=True):
    items: list[EventRowOut]


class LayoutOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    seats: int
    ga_places: int
    sections: list[str]
    ga_areas: list[str]
    # The price tiers the layout declares: ``layout_prices`` names them.
    tiers: list[str]


class VenueOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    slug: str
    name: str
    city: str
    country: str
    timezone: str
    layouts: list[LayoutOut]


class VenueList(msgspec.Struct, frozen=True):
    items: list[VenueOut]


class MovedOut(msgspec.Struct, frozen=True):
    event_id: uuid.UUID
    title: str
    previous: str
    status: str
    phase: str


class CancelledOut(msgspec.Struct, frozen=True):
    event_id: uuid.UUID
    title: str
    previous: str
    status: str
    # Paid orders being refunded now (each fan emailed), holds released, payments in flight
    # (refunded if they succeed).
    orders_to_refund: int
    holds_released: int
    payments_in_flight: int


def _tier_spec(tier: TierIn) -> pricing.TierSpec:
    return pricing.TierSpec(
        name=tier.name,
        price_minor=tier.price_minor,
        sections=tuple(tier.sections),
        rows=tuple(pricing.RowRef(r.section, r.row) for r in tier.rows),
        seat_ids=tuple(tier.seat_ids),
        ga_area=tier.ga_area,
        quantity=tier.quantity,
    )


def event_out(view: admin.EventAdminView) -> EventAdminOut:
    fields = {f: getattr(view, f) for f in EventAdminOut.__struct_fields__ if f != "tiers"}
    return EventAdminOut(
        **fields,
        tiers=[
            TierOut(
                id=t.id,
                name=t.name,
                price=Money(t.price_minor, t.currency),
                kind=t.kind,
                ga_area_id=t.ga_area_id,
                places=t.places,
                available=t.available,
                held=t.held,
                sold=t.sold,
                covers=[CoverageOut(c.name, c.places) for c in t.covers],
            )
            for t in view.tiers
        ],
    )


def _moved(moved: admin.Moved) -> MovedOut:
    return MovedOut(moved.event_id, moved.title, moved.previous, moved.status, moved.phase)


def _audit(opt_action: str) -> dict[str, Any]:
    return {"roles": ADMIN_ONLY, "audit": opt_action, "audit_target": "event"}


class CatalogController(Controller):
    path = "/staff/catalog"
    tags = ["catalog"]
    security = STAFF_SECURITY

    @get(
        "/venues",
        summary="Venues and their seating layouts",
        description="What an event is created on: each layout with its seats, GA places, sections and areas.",
        opt={"roles": ADMIN_ONLY},
    )
    async def venues(
        self, staff: NamedDependency[StaffPrincipal], db_session: NamedDependency[AsyncSession]
    ) -> VenueList:
        return VenueList(
            items=[
                VenueOut(
                    v.id,
                    v.slug,
                    v.name,
                    v.city,
                    v.country,
                    v.timezone,
                    [
                        LayoutOut(
                            o.id,
                            o.name,
                            o.seats,
                            o.ga_places,
                            list(o.sections),
                            list(o.ga_areas),
                            list(o.tiers),
                        )
                        for o in v.layouts
                    ],
                )
                for v in await admin.list_venues(db_session)
            ]
        )

    @get(
        "/events",
        summary="Every event, drafts and cancelled ones too",
        description="Soonest first, with each one's status, phase, places, sold and paid orders.",
        opt={"roles": ADMIN_ONLY},
    )
    async def events(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        include_ended: Annotated[bool, QueryParameter(description="Also events that are over")] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=admin.MAX_LIST, description="At most this many")] = 100,
    ) -> EventRowList:
        rows = await admin.list_events(db_session, include_ended=include_ended, limit=limit)
        return EventRowList(
            items=[EventRowOut(**{f: getattr(r, f) for f in EventRowOut.__struct_fields__}) for r in rows]
        )

    @post(
        "/events",
        status_code=201,
        summary="Create an event on a venue's layout",
        description=(
            "A draft, with its price tiers and every ticket (one per seat, one per GA place) made in one "
            "transaction. The tiers must price every place of the layout exactly once: otherwise 400 "
            "`tiers-invalid`, listing each problem in `problems`."
        ),
        opt=_audit("event.create"),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        data: JSONBody[EventIn],
    ) -> EventAdminOut:
        new = admin.NewEvent(
            **{f: getattr(data, f) for f in EventIn.__struct_fields__ if f != "tiers"},
            tiers=tuple(_tier_spec(t) for t in data.tiers),
        )
        event_id = await admin.create_event(db_session, new, limits=policy_of(request))
        view = await admin.get_event(db_session, event_id)
        audit_detail(request, target_id=str(event_id), slug=view.slug, places=view.places)
        return event_out(view)

    @get(
        "/events/{event_id:uuid}",
        summary="An event in full, as its organiser sees it",
        opt={"roles": ADMIN_ONLY},
    )
    async def event(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
    ) -> EventAdminOut:
        return event_out(await admin.get_event(db_session, event_id))

    @patch(
        "/events/{event_id:uuid}",
        summary="Change an event's details, times or limits",
        description="Only the fields given change; fans see it in search, the event page and the seat map.",
        opt=_audit("event.change"),
    )
    async def change(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
        data: JSONBody[EventPatch],
    ) -> EventAdminOut:
        given = {f: getattr(data, f) for f in EventPatch.__struct_fields__}
        changed = await admin.change_event(
            db_session, event_id, admin.EventChanges(**given), limits=policy_of(request)
        )
        audit_detail(request, fields=changed)
        return event_out(await admin.get_event(db_session, event_id))

    @put(
        "/events/{event_id:uuid}/tiers",
        summary="Replace an event's price tiers",
        description=(
            "Its tickets are made again from the new tiers. Only until anything of the event has been "
            "held (409 `tiers-locked`): change prices instead."
        ),
        opt=_audit("event.tiers"),
    )
    async def tiers(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
        data: JSONBody[TiersIn],
    ) -> EventAdminOut:
        units = await admin.set_tiers(
            db_session,
            event_id,
            [_tier_spec(t) for t in data.tiers],
            currency=data.currency,
            layout_prices=data.layout_prices,
        )
        audit_detail(
            request, tiers=[t.name for t in data.tiers] or sorted(data.layout_prices or {}), places=units
        )
        return event_out(await admin.get_event(db_session, event_id))

    @patch(
        "/events/{event_id:uuid}/prices",
        summary="Change tiers' prices",
        description="New holds pay the new prices; holds and orders already made keep theirs.",
        opt=_audit("event.prices"),
    )
    async def prices(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
        data: JSONBody[PricesIn],
    ) -> EventAdminOut:
        prices = {p.tier: p.price_minor for p in data.prices}
        await admin.change_prices(db_session, event_id, prices)
        audit_detail(request, prices=prices)
        return event_out(await admin.get_event(db_session, event_id))

    @post(
        "/events/{event_id:uuid}/on-sale",
        status_code=200,
        summary="Put an event on sale",
        description=(
            "A draft, or an event taken off sale. It sells from its on-sale time (`scheduled` until "
            "then; `open_now` opens it at once). 409 `event-not-ready` names what stops it."
        ),
        opt=_audit("event.on_sale"),
    )
    async def on_sale(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
        data: JSONBody[OnSaleIn | None] = None,
    ) -> MovedOut:
        open_now = data.open_now if data is not None else False
        return _moved(await admin.put_on_sale(db_session, event_id, open_now=open_now))

    @post(
        "/events/{event_id:uuid}/off-sale",
        status_code=200,
        summary="Take an event off sale",
        description="No new holds from now on (holds made may still be paid), until put on sale again.",
        opt=_audit("event.off_sale"),
    )
    async def off_sale(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
    ) -> MovedOut:
        return _moved(await admin.take_off_sale(db_session, event_id))

    @post(
        "/events/{event_id:uuid}/cancel",
        status_code=200,
        summary="Cancel an event and refund every order",
        description=(
            "For good. Holds are released; every paid order is refunded in full through its payment "
            "provider and its fan emailed, by the worker within moments (`orders_to_refund`). "
            "`GET /staff/catalog/events/{event_id}` says beforehand how many (`paid_orders`)."
        ),
        opt=_audit("event.cancel"),
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
    ) -> CancelledOut:
        done = await admin.cancel_event(db_session, event_id)
        audit_detail(request, orders_to_refund=done.orders_to_refund, holds_released=done.holds_released)
        return CancelledOut(
            done.event_id,
            done.title,
            done.previous,
            done.status,
            done.orders_to_refund,
            done.holds_released,
            done.payments_in_flight,
        )
