"""Administering events: create one on a venue's seating layout, change it, price it, put it
on sale or take it off, cancel it. The verbs behind the staff API (role ``admin``), the
``boxoffice events`` commands and the console's Events screen.

Invariants every verb keeps, in the caller's transaction (none commits):

- An event's inventory is its layout's places exactly once: each seat one unit, each GA area
  as many units as its capacity, each unit in one tier (``booking.catalog.pricing``). Units
  are made with the tiers, in bulk; tiers are replaced only while nothing was ever held of
  the event, because holds and orders name their units and tiers.
- A price change applies to holds made after it: a hold records each unit's price when it is
  made (``hold_items``), and its order and payment take that, so nothing already held or sold
  changes price.
- Moves between statuses follow ``booking.catalog.lifecycle.EVENT_MOVES``, under the event's
  row lock; what fans see beyond the status (scheduled, sold out, ended) is derived there.
- Every change fans can see writes ``event.changed`` (the search document is rewritten) and
  ``seatmap.changed`` (the cached seat-map layout is dropped and its version moves) to the
  outbox, in the same transaction, and notes the event for the request's seat-map bump.
- Cancelling moves the event to ``cancelled``, releases holds not being paid for and writes
  ``event.cancelled``; its paid orders are then refunded in batches by
  ``refund_cancelled_orders`` (the cancellation job, and a periodic sweep that also catches a
  payment that lands after the cancel), each exactly once: an order is refunded only from
  ``confirmed``, under its row lock, and its refund is recorded once per order (the refunds
  table's unique key), paid back by the refund job with that key as the provider's
  idempotency key.

Entry points audit every change (the staff API's middleware, the CLI's ``audited``).
The waiting room's settings of an event are its own (``/staff/events/{id}/waiting-room``),
not part of these verbs.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy import ARRAY, and_, any_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog import pricing
from booking.catalog.lifecycle import EDITABLE, EVENT_MOVES, Phase, phase_sql
from booking.catalog.models import (
    Category,
    Event,
    EventStatus,
    GAArea,
    PriceTier,
    Seat,
    SeatingLayout,
    SeatRow,
    Section,
    Venue,
)
from booking.catalog.pricing import TierSpec
from booking.catalog.search import EVENT_CHANGED, FIRST_YEAR, LAST_YEAR
from booking.errors import (
    EventNotFound,
    EventNotReady,
    EventSlugTaken,
    EventStateConflict,
    InvalidRequest,
    LayoutNotFound,
    PriceTierNotFound,
    TiersLocked,
    VenueNotFound,
)
from booking.holds.models import Hold, HoldState
from booking.holds.policy import HoldPolicy
from booking.holds.service import HOLD_MOVES, units_changed
from booking.inventory import changes
from booking.inventory.models import InventoryUnit, UnitState
from booking.inventory.service import busy_is_retryable
from booking.inventory.transitions import Move, claimable, guard, values
from booking.orders.models import Order, OrderItem, OrderItemState, OrderState
from booking.outbox import Topic, emit_many
from booking.payments import service as payments
from booking.tickets.models import Ticket, TicketState

MAX_TITLE = 200
MAX_DESCRIPTION = 5000
MAX_SLUG = 120
MAX_TIMEZONE = 64
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
# The architecture's bounds on a hold's lifetime, and the most any fan may be allowed.
HOLD_TTL_SECONDS = (300, 600)
MAX_FAN_CAP = 100
DEFAULT_DURATION = dt.timedelta(hours=3)
# Orders refunded per transaction when an event is cancelled: a batch's locks are short.
REFUND_BATCH = 200
MAX_LIST = 500

UnsetType = msgspec.UnsetType
UNSET = msgspec.UNSET


# --- what an organiser gives ------------------------------------------------------------


@dataclass(frozen=True)
class NewEvent:
    """An event to create. ``venue`` and ``layout`` are ids or the venue's slug and the
    layout's name (``layout`` may be left out when the venue has one). Times without a UTC
    offset are the event's own wall clock (``timezone``, by default the venue's).
    ``ends_at`` defaults to three hours after the start, ``onsale_ends_at`` to the start.
    ``layout_prices`` prices the tiers the layout declares instead of giving ``tiers``
    (``pricing.layout_tiers``). With neither the event has no tickets yet (``set_tiers``
    adds them)."""

    title: str
    performer: str
    category: Category
    venue: str
    starts_at: dt.datetime
    onsale_starts_at: dt.datetime
    layout: str | None = None
    ends_at: dt.datetime | None = None
    onsale_ends_at: dt.datetime | None = None
    timezone: str | None = None
    description: str = ""
    slug: str | None = None
    currency: str | None = None
    tiers: tuple[TierSpec, ...] = ()
    max_tickets_per_fan: int | None = None
    hold_ttl_seconds: int | None = None
    layout_prices: Mapping[str, int] | None = None


@dataclass(frozen=True)
class EventChanges:
    """Fields to change; ``UNSET`` ones are left as they are. ``None`` for the fan cap or
    the hold lifetime goes back to the configured one."""

    title: str | UnsetType = UNSET
    performer: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    category: Category | UnsetType = UNSET
    timezone: str | UnsetType = UNSET
    starts_at: dt.datetime | UnsetType = UNSET
    ends_at: dt.datetime | UnsetType = UNSET
    onsale_starts_at: dt.datetime | UnsetType = UNSET
    onsale_ends_at: dt.datetime | UnsetType = UNSET
    max_tickets_per_fan: int | UnsetType | None = UNSET
    hold_ttl_seconds: int | UnsetType | None = UNSET

    def given(self) -> dict[str, Any]:
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not UNSET}


# --- what is shown ------------------------------------------------------------------------


@dataclass(frozen=True)
class TierCoverage:
    """Where a tier's units are: a section (with its seats) or a GA area (with its places)."""

    name: str
    places: int


@dataclass(frozen=True)
class TierView:
    id: uuid.UUID
    name: str
    price_minor: int
    currency: str
    kind: str  # seated | ga
    ga_area_id: uuid.UUID | None
    places: int
    available: int
    held: int
    sold: int
    covers: tuple[TierCoverage, ...]


@dataclass(frozen=True)
class EventAdminView:
    """An event as its organiser sees it: every field, the derived phase, the tiers with
    what each covers and has left, and what a cancellation would refund now."""

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
    status: str
    phase: str
    max_tickets_per_fan: int | None
    hold_ttl_seconds: int | None
    created_at: dt.datetime
    currency: str | None
    places: int
    sold: int
    held: int
    # Confirmed orders (each refunded in full if the event is cancelled), and holds being
    # paid for (each refunded if its payment lands after a cancellation).
    paid_orders: int
    payments_in_flight: int
    tiers: tuple[TierView, ...]


@dataclass(frozen=True)
class EventRow:
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


@dataclass(frozen=True)
class LayoutRow:
    id: uuid.UUID
    name: str
    seats: int
    ga_places: int
    sections: tuple[str, ...]
    ga_areas: tuple[str, ...]
    # The price tiers the layout declares, which an event may price by name.
    tiers: tuple[str, ...] = ()


@dataclass(frozen=True)
class VenueRow:
    id: uuid.UUID
    slug: str
    name: str
    city: str
    country: str
    timezone: str
    layouts: tuple[LayoutRow, ...]


@dataclass(frozen=True)
class Moved:
    event_id: uuid.UUID
    title: str
    previous: str
    status: str
    phase: str


@dataclass(frozen=True)
class Cancelled:
    event_id: uuid.UUID
    title: str
    previous: str
    status: str
    # Paid orders the cancellation job refunds, and holds released now.
    orders_to_refund: int
    holds_released: int
    payments_in_flight: int


# --- checking what was given --------------------------------------------------------------


def _text(name: str, value: str, limit: int, *, required: bool = True) -> str:
    if required and not value.strip():
        raise InvalidRequest(f"{name} cannot be empty.")
    if len(value) > limit:
        raise InvalidRequest(f"{name} is at most {limit} characters.")
    if "\x00" in value:
        raise InvalidRequest(f"{name} cannot contain NUL characters.")
    return value.strip() if required else value


def _zone(name: str) -> str:
    """Raises: InvalidRequest (not an IANA time zone this machine knows)."""
    if not name or len(name) > MAX_TIMEZONE or not name.isprintable():
        raise InvalidRequest("timezone is an IANA time zone such as Europe/London.")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"{name!r} is not a known time zone; use one such as Europe/London.") from None
    return name


def _moment(name: str, value: dt.datetime, zone: str) -> dt.datetime:
    """A time as stored: one without an offset is a wall-clock time where the event is."""
    if not FIRST_YEAR + 100 <= value.year <= LAST_YEAR:
        raise InvalidRequest(f"{name} must be between the years {FIRST_YEAR + 100} and {LAST_YEAR}.")
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    return value.astimezone(dt.UTC)


def _check_window(starts: dt.datetime, ends: dt.datetime, opens: dt.datetime, closes: dt.datetime) -> None:
    """The constraints of ``events``, said in words before the database refuses."""
    if not starts < ends:
        raise InvalidRequest("ends_at must be after starts_at.")
    if not opens < closes:
        raise InvalidRequest("onsale_ends_at must be after onsale_starts_at.")
    if closes > ends:
        raise InvalidRequest(
            "onsale_ends_at must be no later than ends_at: the sale closes by the end of the event."
        )


def _check_overrides(cap: int | None, ttl: int | None, limits: HoldPolicy) -> None:
    if cap is not None and not 1 <= cap <= min(limits.tickets_per_fan, MAX_FAN_CAP):
        raise InvalidRequest(
            f"max_tickets_per_fan is 1 to {limits.tickets_per_fan}: an event may lower the configured"
            " cap (BOXOFFICE_MAX_TICKETS_PER_FAN), not raise it."
        )
    low, high = HOLD_TTL_SECONDS
    if ttl is not None and not low <= ttl <= high:
        raise InvalidRequest(f"hold_ttl_seconds is {low} to {high} (five to ten minutes).")


def _currency(value: str | None) -> str:
    if value is None or not CURRENCY.match(value):
        raise InvalidRequest("currency is an ISO 4217 code in capitals, such as GBP or EUR.")
    return value


def slugify(text: str) -> str:
    """``"Mahler 2: Resurrection"`` → ``mahler-2-resurrection``; accents dropped."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:90].strip("-") or "event"


# --- finding things -----------------------------------------------------------------------


def _as_uuid(ref: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


async def _venue(session: AsyncSession, ref: str) -> Venue:
    """Raises: VenueNotFound."""
    ident = _as_uuid(ref)
    where = Venue.id == ident if ident is not None else Venue.slug == ref[:80]
    venue = await session.scalar(select(Venue).where(where))
    if venue is None:
        raise VenueNotFound(f"There is no venue {ref!r}; `GET /staff/catalog/venues` lists them.")
    return venue


async def _layout(session: AsyncSession, venue: Venue, ref: str | None) -> SeatingLayout:
    """Raises: LayoutNotFound (none named so, or several and none named)."""
    layouts = (
        await session.scalars(
            select(SeatingLayout).where(SeatingLayout.venue_id == venue.id).order_by(SeatingLayout.name)
        )
    ).all()
    names = ", ".join(repr(layout.name) for layout in layouts) or "none"
    if ref is None:
        if len(layouts) == 1:
            return layouts[0]
        if not layouts:
            raise LayoutNotFound(f"Venue {venue.slug!r} has no seating layout yet: import one first.")
        raise LayoutNotFound(f"Venue {venue.slug!r} has several layouts ({names}): name the one to use.")
    ident = _as_uuid(ref)
    for layout in layouts:
        if layout.id == ident or layout.name == ref:
            return layout
    raise LayoutNotFound(f"Venue {venue.slug!r} has no layout {ref!r} (its layouts: {names}).")


async def _locked(session: AsyncSession, event_id: uuid.UUID) -> tuple[Event, Phase, dt.datetime]:
    """The event row, locked for this transaction, with its phase and the database's now.

    Raises:
        EventNotFound, InventoryBusy (the row stayed locked past the lock timeout).
    """
    async with busy_is_retryable():
        row = (
            await session.execute(
                select(Event, phase_sql(), func.now())
                .where(Event.id == event_id)
                .with_for_update(of=Event)
                .execution_options(populate_existing=True)
            )
        ).first()
    if row is None:
        raise EventNotFound(f"There is no event {event_id}.")
    return row[0], Phase(row[1]), row[2]


def _refuse(action: str, event: Event, phase: Phase) -> EventStateConflict:
    return EventStateConflict(action, event.status.value, phase.value)


async def _editable(
    session: AsyncSession, event_id: uuid.UUID, action: str
) -> tuple[Event, Phase, dt.datetime]:
    event, phase, now = await _locked(session, event_id)
    if event.status not in EDITABLE or phase == Phase.ENDED:
        raise _refuse(action, event, phase)
    return event, phase, now


async def _fan_visible(session: AsyncSession, event_id: uuid.UUID, **detail: str) -> None:
    """Tell search and the seat map, in this transaction (see the module's docstring)."""
    payload = {"event_id": str(event_id)}
    await emit_many(
        session,
        [(EVENT_CHANGED, {**payload, **detail}), (Topic.SEATMAP_CHANGED, payload)],
        catalog_event_id=event_id,
    )
    changes.note(session, event_id)


# --- reading ------------------------------------------------------------------------------


async def list_venues(session: AsyncSession) -> list[VenueRow]:
    """Every venue with its layouts and what each has to sell: what an event is created on."""
    venues = (await session.scalars(select(Venue).order_by(Venue.name, Venue.id))).all()
    seats = {
        layout_id: int(count)
        for layout_id, count in await session.execute(
            select(Section.layout_id, func.count(Seat.id))
            .join(SeatRow, SeatRow.section_id == Section.id)
            .join(Seat, Seat.row_id == SeatRow.id)
            .group_by(Section.layout_id)
        )
    }
    sections: dict[uuid.UUID, list[str]] = {}
    for layout_id, name in await session.execute(
        select(Section.layout_id, Section.name).order_by(Section.sort_order, Section.name)
    ):
        sections.setdefault(layout_id, []).append(name)
    areas: dict[uuid.UUID, list[tuple[str, int]]] = {}
    for layout_id, name, capacity in await session.execute(
        select(GAArea.layout_id, GAArea.name, GAArea.capacity).order_by(GAArea.name)
    ):
        areas.setdefault(layout_id, []).append((name, capacity))
    layouts: dict[uuid.UUID, list[LayoutRow]] = {}
    for layout in (await session.scalars(select(SeatingLayout).order_by(SeatingLayout.name))).all():
        layouts.setdefault(layout.venue_id, []).append(
            LayoutRow(
                id=layout.id,
                name=layout.name,
                seats=int(seats.get(layout.id, 0)),
                ga_places=sum(capacity for _, capacity in areas.get(layout.id, [])),
                sections=tuple(sections.get(layout.id, [])),
                ga_areas=tuple(name for name, _ in areas.get(layout.id, [])),
                tiers=tuple(layout.tiers or ()),
            )
        )
    return [
        VenueRow(v.id, v.slug, v.name, v.city, v.country, v.timezone, tuple(layouts.get(v.id, [])))
        for v in venues
    ]


async def _unit_counts(
    session: AsyncSession, event_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, int]]:
    """(places, sold) per event."""
    rows = await session.execute(
        select(
            InventoryUnit.event_id,
            func.count(InventoryUnit.id).filter(InventoryUnit.state != UnitState.BLOCKED),
            func.count(InventoryUnit.id).filter(InventoryUnit.state == UnitState.SOLD),
        )
        .where(InventoryUnit.event_id.in_(event_ids))
        .group_by(InventoryUnit.event_id)
    )
    return {event_id: (int(places), int(sold)) for event_id, places, sold in rows}


async def _paid_orders(session: AsyncSession, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = await session.execute(
        select(Order.event_id, func.count())
        .where(Order.event_id.in_(event_ids), Order.state == OrderState.CONFIRMED)
        .group_by(Order.event_id)
    )
    return {event_id: int(count) for event_id, count in rows}


async def list_events(
    session: AsyncSession, *, include_ended: bool = False, limit: int = 100
) -> list[EventRow]:
    """Every event (drafts and cancelled ones too), soonest first; ended ones only with
    ``include_ended``. Four statements whatever the number of events.

    Raises:
        InvalidRequest: ``limit`` is not 1 to 500.
    """
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"limit is 1 to {MAX_LIST}.")
    query = (
        select(Event, Venue.name, phase_sql())
        .join(Venue, Venue.id == Event.venue_id)
        .order_by(Event.starts_at, Event.id)
        .limit(limit)
    )
    if not include_ended:
        query = query.where(Event.ends_at > func.now(), Event.status != EventStatus.COMPLETED)
    rows = (await session.execute(query)).all()
    ids = [event.id for event, _, _ in rows]
    counts = await _unit_counts(session, ids) if ids else {}
    paid = await _paid_orders(session, ids) if ids else {}
    return [
        EventRow(
            id=event.id,
            slug=event.slug,
            title=event.title,
            performer=event.performer,
            venue_name=venue_name,
            city=event.city,
            starts_at=event.starts_at,
            timezone=event.timezone,
            onsale_starts_at=event.onsale_starts_at,
            onsale_ends_at=event.onsale_ends_at,
            status=event.status.value,
            phase=phase,
            places=counts.get(event.id, (0, 0))[0],
            sold=counts.get(event.id, (0, 0))[1],
            paid_orders=paid.get(event.id, 0),
        )
        for event, venue_name, phase in rows
    ]


async def get_event(session: AsyncSession, event_id: uuid.UUID) -> EventAdminView:
    """The event in full, as its organiser sees it (any status).

    Raises:
        EventNotFound.
    """
    row = (
        await session.execute(
            select(Event, Venue.name, SeatingLayout.name, phase_sql())
            .join(Venue, Venue.id == Event.venue_id)
            .join(SeatingLayout, SeatingLayout.id == Event.layout_id)
            .where(Event.id == event_id)
            .execution_options(populate_existing=True)
        )
    ).first()
    if row is None:
        raise EventNotFound(f"There is no event {event_id}.")
    event, venue_name, layout_name, phase = row
    unit = InventoryUnit
    live_hold = and_(unit.state == UnitState.HELD, unit.held_until >= func.now())
    tiers = (
        await session.execute(
            select(
                PriceTier,
                func.count(unit.id).filter(unit.state != UnitState.BLOCKED),
                func.count(unit.id).filter(claimable()),
                func.count(unit.id).filter(live_hold),
                func.count(unit.id).filter(unit.state == UnitState.SOLD),
            )
            .outerjoin(unit, and_(unit.price_tier_id == PriceTier.id, unit.event_id == PriceTier.event_id))
            .where(PriceTier.event_id == event_id)
            .group_by(PriceTier.id)
            .order_by(PriceTier.sort_order, PriceTier.name)
        )
    ).all()
    covers: dict[uuid.UUID, list[TierCoverage]] = {}
    seated = (
        select(unit.price_tier_id, Section.name, func.count(unit.id))
        .join(Seat, Seat.id == unit.seat_id)
        .join(SeatRow, SeatRow.id == Seat.row_id)
        .join(Section, Section.id == SeatRow.section_id)
        .where(unit.event_id == event_id)
        .group_by(unit.price_tier_id, Section.sort_order, Section.name)
        .order_by(Section.sort_order, Section.name)
    )
    standing = (
        select(unit.price_tier_id, GAArea.name, func.count(unit.id))
        .join(GAArea, GAArea.id == unit.ga_area_id)
        .where(unit.event_id == event_id)
        .group_by(unit.price_tier_id, GAArea.name)
        .order_by(GAArea.name)
    )
    for query in (seated, standing):
        for tier_id, name, count in await session.execute(query):
            covers.setdefault(tier_id, []).append(TierCoverage(name, int(count)))
    paid = await session.scalar(
        select(func.count()).where(Order.event_id == event_id, Order.state == OrderState.CONFIRMED)
    )
    paying = await session.scalar(
        select(func.count()).where(Hold.event_id == event_id, Hold.state == HoldState.PAYING)
    )
    views = tuple(
        TierView(
            id=tier.id,
            name=tier.name,
            price_minor=tier.price_minor,
            currency=tier.currency,
            kind="seated" if tier.ga_area_id is None else "ga",
            ga_area_id=tier.ga_area_id,
            places=int(places),
            available=int(available),
            held=int(held),
            sold=int(sold),
            covers=tuple(covers.get(tier.id, [])),
        )
        for tier, places, available, held, sold in tiers
    )
    return EventAdminView(
        id=event.id,
        slug=event.slug,
        title=event.title,
        performer=event.performer,
        description=event.description,
        category=event.category.value,
        venue_id=event.venue_id,
        venue_name=venue_name,
        layout_id=event.layout_id,
        layout_name=layout_name,
        city=event.city,
        timezone=event.timezone,
        starts_at=event.starts_at,
        ends_at=event.ends_at,
        onsale_starts_at=event.onsale_starts_at,
        onsale_ends_at=event.onsale_ends_at,
        status=event.status.value,
        phase=phase,
        max_tickets_per_fan=event.max_tickets_per_fan,
        hold_ttl_seconds=event.hold_ttl_seconds,
        created_at=event.created_at,
        currency=views[0].currency if views else None,
        places=sum(t.places for t in views),
        sold=sum(t.sold for t in views),
        held=sum(t.held for t in views),
        paid_orders=int(paid or 0),
        payments_in_flight=int(paying or 0),
        tiers=views,
    )


# --- creating and changing ----------------------------------------------------------------


async def create_event(session: AsyncSession, new: NewEvent, *, limits: HoldPolicy) -> uuid.UUID:
    """Create a draft event on a venue's layout, with its tiers and every inventory unit
    (one statement for the seats, one for the GA places), and return its id. ``limits`` is
    the configured hold policy an event's own cap may only lower.

    The slug is the given one, or made from the title, city and date (with ``-2``, ``-3``...
    when taken).

    Raises:
        InvalidRequest (a field out of bounds, times out of order), VenueNotFound,
        LayoutNotFound, EventSlugTaken (a given slug is another event's), TiersInvalid.
    """
    title = _text("title", new.title, MAX_TITLE)
    performer = _text("performer", new.performer, MAX_TITLE)
    description = _text("description", new.description, MAX_DESCRIPTION, required=False)
    if new.slug is not None and (len(new.slug) > MAX_SLUG or not SLUG.match(new.slug)):
        raise InvalidRequest("slug is lower-case letters, digits and single hyphens, at most 120 characters.")
    _check_overrides(new.max_tickets_per_fan, new.hold_ttl_seconds, limits)
    if new.tiers and new.layout_prices:
        raise InvalidRequest("Give tiers, or prices for the layout's own tiers, not both.")
    priced = bool(new.tiers or new.layout_prices)
    currency = _currency(new.currency) if priced or new.currency is not None else None
    venue = await _venue(session, new.venue)
    layout = await _layout(session, venue, new.layout)
    zone = _zone(new.timezone or venue.timezone)
    starts = _moment("starts_at", new.starts_at, zone)
    ends = _moment("ends_at", new.ends_at, zone) if new.ends_at is not None else starts + DEFAULT_DURATION
    opens = _moment("onsale_starts_at", new.onsale_starts_at, zone)
    closes = _moment("onsale_ends_at", new.onsale_ends_at, zone) if new.onsale_ends_at is not None else starts
    _check_window(starts, ends, opens, closes)
    plan = None
    if priced:
        tiers = new.tiers or await pricing.layout_tiers(session, layout.id, new.layout_prices or {})
        plan = await pricing.plan_tiers(session, await pricing.layout_places(session, layout.id), tiers)
    values_ = {
        "title": title,
        "performer": performer,
        "description": description,
        "category": new.category,
        "venue_id": venue.id,
        "layout_id": layout.id,
        "city": venue.city,
        "timezone": zone,
        "starts_at": starts,
        "ends_at": ends,
        "onsale_starts_at": opens,
        "onsale_ends_at": closes,
        "status": EventStatus.DRAFT,
        "max_tickets_per_fan": new.max_tickets_per_fan,
        "hold_ttl_seconds": new.hold_ttl_seconds,
    }
    base = new.slug or slugify(f"{title} {venue.city} {starts.astimezone(ZoneInfo(zone)):%Y-%m-%d}")
    event_id = None
    for attempt in range(1 if new.slug else 50):
        slug = base if attempt == 0 else f"{base}-{attempt + 1}"
        event_id = await session.scalar(
            pg_insert(Event)
            .values(slug=slug, **values_)
            .on_conflict_do_nothing(index_elements=["slug"])
            .returning(Event.id)
        )
        if event_id is not None:
            break
    if event_id is None:
        raise EventSlugTaken(f"The slug {base!r} is taken: choose another.")
    assert isinstance(event_id, uuid.UUID)
    if plan is not None:
        assert currency is not None
        await pricing.install_tiers(session, event_id, currency, plan)
    await _fan_visible(session, event_id)
    return event_id


async def change_event(
    session: AsyncSession, event_id: uuid.UUID, change: EventChanges, *, limits: HoldPolicy
) -> list[str]:
    """Change the given fields (``EventChanges``); returns their names. Times without an
    offset are in the event's time zone (the new one, when that changes too). The times
    are checked together, as they will be.

    Raises:
        EventNotFound; EventStateConflict (cancelled or ended); InvalidRequest;
        InventoryBusy.
    """
    given = change.given()
    if not given:
        raise InvalidRequest("Give at least one field to change.")
    event, _, _ = await _editable(session, event_id, "change")
    updates: dict[str, Any] = {}
    for name in ("title", "performer"):
        if name in given:
            updates[name] = _text(name, given[name], MAX_TITLE)
    if "description" in given:
        updates["description"] = _text("description", given["description"], MAX_DESCRIPTION, required=False)
    if "category" in given:
        updates["category"] = Category(given["category"])
    zone = _zone(given["timezone"]) if "timezone" in given else event.timezone
    if "timezone" in given:
        updates["timezone"] = zone
    for name in ("starts_at", "ends_at", "onsale_starts_at", "onsale_ends_at"):
        if name in given:
            updates[name] = _moment(name, given[name], zone)
    window = [
        updates.get(n, getattr(event, n))
        for n in ("starts_at", "ends_at", "onsale_starts_at", "onsale_ends_at")
    ]
    _check_window(*window)
    cap = given.get("max_tickets_per_fan", event.max_tickets_per_fan)
    ttl = given.get("hold_ttl_seconds", event.hold_ttl_seconds)
    _check_overrides(cap, ttl, limits)
    for name in ("max_tickets_per_fan", "hold_ttl_seconds"):
        if name in given:
            updates[name] = given[name]
    await session.execute(update(Event).where(Event.id == event_id).values(**updates))
    await _fan_visible(session, event_id)
    return sorted(updates)


async def _held_ever(session: AsyncSession, event_id: uuid.UUID) -> bool:
    return bool(await session.scalar(select(select(Hold.id).where(Hold.event_id == event_id).exists())))


async def set_tiers(
    session: AsyncSession,
    event_id: uuid.UUID,
    tiers: Sequence[TierSpec] = (),
    *,
    currency: str | None = None,
    layout_prices: Mapping[str, int] | None = None,
) -> int:
    """Replace the event's tiers and units with ``tiers``, or with the layout's own tiers
    priced by ``layout_prices`` (checked to cover its layout exactly once); returns how many
    units it has now. The currency stays the event's unless given (an event with no tiers
    yet needs one).

    Only while nothing of the event was ever held: the units are locked first, so a hold
    being made at the same moment either commits before (and this is refused) or finds its
    units gone.

    Raises:
        EventNotFound; EventStateConflict (cancelled or ended); TiersLocked; TiersInvalid;
        InvalidRequest (currency); InventoryBusy.
    """
    event, _, _ = await _editable(session, event_id, "set the tiers of")
    if currency is None:
        currency = await session.scalar(
            select(func.min(PriceTier.currency)).where(PriceTier.event_id == event_id)
        )
    currency = _currency(currency)
    async with busy_is_retryable():
        await session.execute(
            select(InventoryUnit.id).where(InventoryUnit.event_id == event_id).with_for_update()
        )
    if await _held_ever(session, event_id):
        raise TiersLocked()
    if tiers and layout_prices:
        raise InvalidRequest("Give tiers, or prices for the layout's own tiers, not both.")
    if layout_prices:
        tiers = await pricing.layout_tiers(session, event.layout_id, layout_prices)
    plan = await pricing.plan_tiers(session, await pricing.layout_places(session, event.layout_id), tiers)
    installed = await pricing.install_tiers(session, event_id, currency, plan)
    await _fan_visible(session, event_id)
    return installed.units


async def change_prices(session: AsyncSession, event_id: uuid.UUID, prices: Mapping[str, int]) -> int:
    """Set tiers' prices, each named by its id or its name; returns how many changed. Holds
    and orders keep the prices they were made at: only new holds pay the new ones.

    Raises:
        EventNotFound; EventStateConflict (cancelled or ended); PriceTierNotFound;
        InvalidRequest (no price, or one out of bounds); InventoryBusy.
    """
    if not prices:
        raise InvalidRequest("Give at least one tier and its new price.")
    for ref, price in prices.items():
        if not 0 <= price <= pricing.MAX_PRICE_MINOR:
            raise InvalidRequest(f"The price of {ref!r} is 0 to {pricing.MAX_PRICE_MINOR} minor units.")
    await _editable(session, event_id, "change the prices of")
    tiers = (
        await session.execute(select(PriceTier.id, PriceTier.name).where(PriceTier.event_id == event_id))
    ).all()
    by_ref = {str(tier_id): tier_id for tier_id, _ in tiers} | {name: tier_id for tier_id, name in tiers}
    if unknown := [ref for ref in prices if ref not in by_ref]:
        names = ", ".join(repr(name) for _, name in tiers) or "none"
        raise PriceTierNotFound(
            f"No tier {', '.join(map(repr, unknown))} at this event (its tiers: {names})."
        )
    changed = 0
    for ref, price in prices.items():
        result = await session.execute(
            update(PriceTier)
            .where(PriceTier.id == by_ref[ref], PriceTier.price_minor != price)
            .values(price_minor=price)
            .returning(PriceTier.id)
        )
        changed += len(result.all())
    if changed:
        await _fan_visible(session, event_id)
    return changed


# --- moving along the lifecycle -----------------------------------------------------------


async def _move(session: AsyncSession, event: Event, move: str, **extra: Any) -> Moved:
    """Apply ``move`` to a locked event whose status the caller checked against it."""
    sources, target = EVENT_MOVES[move]
    previous = event.status
    moved = await session.execute(
        update(Event).where(Event.id == event.id, Event.status.in_(sources)).values(status=target, **extra)
    )
    assert moved.rowcount == 1, "the row is locked and its status was checked"  # type: ignore[attr-defined]
    phase = await session.scalar(select(phase_sql()).where(Event.id == event.id))
    await _fan_visible(session, event.id, status=target.value, previous=previous.value)
    return Moved(event.id, event.title, previous.value, target.value, str(phase))


async def put_on_sale(session: AsyncSession, event_id: uuid.UUID, *, open_now: bool = False) -> Moved:
    """A draft (or an event taken off sale) goes on sale: it sells from its on-sale time
    (``scheduled`` until then) to the end of its window. With ``open_now`` a sale that would
    open later opens at once.

    Raises:
        EventNotFound; EventStateConflict; EventNotReady (its units are not its layout's
        places exactly once, it has ended, or its on-sale window has closed); InventoryBusy.
    """
    event, phase, now = await _locked(session, event_id)
    if event.status not in EVENT_MOVES["put_on_sale"][0] or phase == Phase.ENDED:
        raise _refuse("put on sale", event, phase)
    problems = await pricing.coverage_problems(session, event_id)
    if event.onsale_ends_at <= now:
        problems.append(
            f"its on-sale window closed at {event.onsale_ends_at.isoformat()}:"
            " move onsale_ends_at later first"
        )
    if problems:
        raise EventNotReady(problems)
    extra = {"onsale_starts_at": func.now()} if open_now and event.onsale_starts_at > now else {}
    return await _move(session, event, "put_on_sale", **extra)


async def take_off_sale(session: AsyncSession, event_id: uuid.UUID) -> Moved:
    """Stop selling for good (until put on sale again): no new hold from now on; holds
    already made may still be paid, as with a pause.

    Raises:
        EventNotFound; EventStateConflict; InventoryBusy.
    """
    event, phase, _ = await _locked(session, event_id)
    if event.status not in EVENT_MOVES["take_off_sale"][0] or phase == Phase.ENDED:
        raise _refuse("take off sale", event, phase)
    return await _move(session, event, "take_off_sale")


def _ids(name: str, ids: Sequence[uuid.UUID]) -> Any:
    return bindparam(name, list(ids), type_=ARRAY(PG_UUID(as_uuid=True)))


async def cancel_event(session: AsyncSession, event_id: uuid.UUID) -> Cancelled:
    """Cancel the event: no sale from now on, holds not being paid for released (their
    places back, for nobody), and ``event.cancelled`` written so its paid orders are refunded
    (``refund_cancelled_orders``). A hold being paid for is left to its payment: if that
    succeeds, its order is refunded too.

    Raises:
        EventNotFound; EventStateConflict (already cancelled, or ended); InventoryBusy.
    """
    event, phase, _ = await _locked(session, event_id)
    if event.status not in EVENT_MOVES["cancel"][0] or phase == Phase.ENDED:
        raise _refuse("cancel", event, phase)
    async with busy_is_retryable():
        # Holds first, then their units: the order every hold verb locks them in.
        released = (
            await session.scalars(
                update(Hold)
                .where(Hold.event_id == event_id, Hold.state.in_(sorted(HOLD_MOVES["release"][0])))
                .values(state=HoldState.RELEASED, ended_at=func.now())
                .returning(Hold.id)
            )
        ).all()
        units: Sequence[int] = []
        if released:
            units = (
                await session.scalars(
                    update(InventoryUnit)
                    .where(
                        InventoryUnit.event_id == event_id,
                        guard(Move.RELEASE, hold_id=any_(_ids("hold_ids", released))),
                    )
                    .values(**values(Move.RELEASE))
                    .returning(InventoryUnit.id)
                )
            ).all()
    await units_changed(session, event_id, sorted(units), UnitState.AVAILABLE)
    moved = await _move(session, event, "cancel")
    await emit_many(
        session, [(Topic.EVENT_CANCELLED, {"event_id": str(event_id)})], catalog_event_id=event_id
    )
    paid = await _paid_orders(session, [event_id])
    paying = await session.scalar(
        select(func.count()).where(Hold.event_id == event_id, Hold.state == HoldState.PAYING)
    )
    return Cancelled(
        event_id=event_id,
        title=event.title,
        previous=moved.previous,
        status=moved.status,
        orders_to_refund=paid.get(event_id, 0),
        holds_released=len(released),
        payments_in_flight=int(paying or 0),
    )


async def refund_cancelled_orders(
    session: AsyncSession, event_id: uuid.UUID, *, limit: int = REFUND_BATCH
) -> int:
    """Refund up to ``limit`` paid orders of a cancelled event, in the caller's transaction:
    their places back, items refunded, tickets revoked, each payment's refund recorded for
    the refund job (handed back in person for a till's), and a notice to each fan on the
    outbox. Returns how many; 0 once none is left. Safe to run twice and side by side:
    orders are taken from ``confirmed`` under their row locks (others' skipped), and a refund
    is recorded once per order.

    The same steps as ``booking.orders.service.refund_order``, for a batch at a time: a
    cancelled stadium has tens of thousands of orders.

    Raises:
        EventNotFound; EventStateConflict (the event is not cancelled); InventoryBusy.
    """
    status = await session.scalar(select(Event.status).where(Event.id == event_id))
    if status is None:
        raise EventNotFound(f"There is no event {event_id}.")
    if status != EventStatus.CANCELLED:
        raise EventStateConflict("refund the orders of", status.value, status.value)
    ids = (
        await session.scalars(
            select(Order.id)
            .where(Order.event_id == event_id, Order.state == OrderState.CONFIRMED)
            .order_by(Order.created_at, Order.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not ids:
        return 0
    async with busy_is_retryable():
        units = (
            await session.scalars(
                update(InventoryUnit)
                .where(
                    InventoryUnit.event_id == event_id,
                    guard(Move.RETURN, order_id=any_(_ids("order_ids", ids))),
                )
                .values(**values(Move.RETURN))
                .returning(InventoryUnit.id)
            )
        ).all()
    await session.execute(
        update(OrderItem)
        .where(OrderItem.order_id.in_(ids), OrderItem.state == OrderItemState.ACTIVE)
        .values(state=OrderItemState.REFUNDED)
    )
    await session.execute(
        update(Ticket)
        .where(Ticket.order_id.in_(ids), Ticket.state == TicketState.VALID)
        .values(state=TicketState.REVOKED, revoked_at=func.now())
    )
    await session.execute(
        update(Order)
        .where(Order.id.in_(ids), Order.state == OrderState.CONFIRMED)
        .values(state=OrderState.REFUNDED, cancelled_at=func.now())
    )
    for order_id in ids:
        await payments.request_order_refund(session, order_id)
    await units_changed(session, event_id, sorted(units), UnitState.AVAILABLE)
    await emit_many(
        session,
        [(Topic.ORDER_CANCELLED_BY_EVENT, {"order_id": str(o), "event_id": str(event_id)}) for o in ids],
        catalog_event_id=event_id,
    )
    return len(ids)


async def cancelled_with_orders(session: AsyncSession, *, limit: int = 100) -> list[uuid.UUID]:
    """Cancelled events that still have paid orders: the cancellation job's work left, or a
    payment that landed after the cancel."""
    return list(
        (
            await session.scalars(
                select(Event.id)
                .where(
                    Event.status == EventStatus.CANCELLED,
                    select(Order.id)
                    .where(Order.event_id == Event.id, Order.state == OrderState.CONFIRMED)
                    .exists(),
                )
                .order_by(Event.id)
                .limit(limit)
            )
        ).all()
    )
