"""Reading the catalog: finding events (filters, keyword relevance, facets, keyset pagination)
and one event in full, with what is left in each price tier."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import math
import uuid
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, Float, Select, and_, cast, func, null, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.models import Category, Event, EventSearch, EventStatus, PriceTier, Venue
from booking.catalog.search import EventFilters, on_sale_now
from booking.errors import EventNotFound, InvalidCursor
from booking.inventory.models import InventoryUnit, UnitState
from booking.inventory.transitions import Move, guard

MAX_PAGE = 100
# Statuses a fan can find in the list; a draft is not public anywhere. An event taken off
# sale stays findable (not buyable), as one whose on-sale window has closed does.
LISTED = (EventStatus.ON_SALE, EventStatus.PAUSED, EventStatus.OFF_SALE)


@dataclass(frozen=True)
class EventSummary:
    id: uuid.UUID
    slug: str
    title: str
    performer: str
    category: str
    city: str
    venue_id: uuid.UUID
    venue_name: str
    starts_at: dt.datetime
    timezone: str
    status: str
    onsale_starts_at: dt.datetime
    onsale_ends_at: dt.datetime
    on_sale_now: bool
    price_from_minor: int | None
    currency: str | None
    # Relevance to the keyword (higher is better); None without one.
    score: float | None = None
    # From the point searched near; None without one.
    distance_km: float | None = None


@dataclass(frozen=True)
class CategoryCount:
    category: str
    count: int


@dataclass(frozen=True)
class EventPage:
    items: list[EventSummary]
    next_cursor: str | None
    # Every category, in its declared order, with how many events match all the other
    # filters in it: the counts a fan sees next to each category choice.
    facets: list[CategoryCount]


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended, and for which search. ``score`` is set exactly when
    the search had a keyword (the page was in relevance order)."""

    search: str
    score: float | None
    starts_at: dt.datetime
    event_id: uuid.UUID


def _search_tag(filters: EventFilters) -> str:
    return hashlib.sha256(filters.fingerprint().encode()).hexdigest()[:12]


def encode_cursor(cursor: Cursor) -> str:
    score = "" if cursor.score is None else repr(cursor.score)
    raw = f"{cursor.search}|{score}|{cursor.starts_at.isoformat()}|{cursor.event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Cursor:
    """Raises: InvalidCursor when the cursor was not made by ``encode_cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        search, score_text, when, ident = raw.split("|")
        starts_at = dt.datetime.fromisoformat(when)
        if starts_at.tzinfo is None:
            raise ValueError("naive time")
        score = float(score_text) if score_text else None
        if score is not None and not math.isfinite(score):
            raise ValueError("score is not a number")
        return Cursor(search=search, score=score, starts_at=starts_at, event_id=uuid.UUID(ident))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(cursor) from None


def _after(cursor: Cursor, score: ColumnElement[float] | None) -> ColumnElement[bool]:
    """Rows strictly after the cursor in the page order: score descending (with a keyword),
    then start time and id ascending."""
    later = tuple_(Event.starts_at, Event.id) > tuple_(cursor.starts_at, cursor.event_id)
    if score is None:
        return later
    return or_(score < cursor.score, and_(score == cursor.score, later))


def _listed() -> list[ColumnElement[bool]]:
    return [Event.status.in_(LISTED), Event.ends_at > func.now()]


_Query = TypeVar("_Query", bound=Select[*tuple[Any, ...]])


def _from_events(query: _Query, filters: EventFilters) -> _Query:
    query = query.join(Venue, Venue.id == Event.venue_id)
    if filters.keyword is not None:
        # An inner join: an event is findable by keyword once its document has been written.
        query = query.join(EventSearch, EventSearch.event_id == Event.id)
    return query


async def list_events(
    session: AsyncSession,
    filters: EventFilters | None = None,
    *,
    limit: int = 20,
    cursor: str | None = None,
) -> EventPage:
    """Published events that have not ended and match ``filters``: by relevance when there is
    a keyword (best first, then soonest), otherwise soonest first.

    Pages never repeat or skip an event while the catalog stands still; the cursor carries
    the last row's sort key and a tag of the filters it was made for.

    Raises:
        InvalidCursor: ``cursor`` is not one this function returned for the same filters.
    """
    filters = filters or EventFilters()
    limit = max(1, min(limit, MAX_PAGE))
    tag = _search_tag(filters)
    after = decode_cursor(cursor) if cursor is not None else None
    keyword = filters.keyword
    if after is not None and (after.search != tag or (after.score is None) != (keyword is None)):
        raise InvalidCursor(cursor or "")

    price = (
        select(
            PriceTier.event_id,
            func.min(PriceTier.price_minor).label("price_from"),
            func.min(PriceTier.currency).label("currency"),
        )
        .group_by(PriceTier.event_id)
        .subquery()
    )
    score = keyword.score() if keyword is not None else None
    distance = filters.near.distance_km() if filters.near is not None else None
    columns: list[ColumnElement[Any]] = [
        on_sale_now().label("on_sale_now"),
        price.c.price_from,
        price.c.currency,
        Venue.name.label("venue_name"),
        (score if score is not None else cast(null(), Float)).label("score"),
        (distance if distance is not None else cast(null(), Float)).label("distance"),
    ]
    query = _from_events(select(Event, *columns), filters).outerjoin(price, price.c.event_id == Event.id)
    query = query.where(*_listed(), *filters.clauses())
    if after is not None:
        query = query.where(_after(after, score))
    order = [Event.starts_at, Event.id]
    query = query.order_by(*([score.desc(), *order] if score is not None else order)).limit(limit + 1)
    rows = (await session.execute(query)).all()
    items = [
        EventSummary(
            id=event.id,
            slug=event.slug,
            title=event.title,
            performer=event.performer,
            category=event.category.value,
            city=event.city,
            venue_id=event.venue_id,
            venue_name=venue_name,
            starts_at=event.starts_at,
            timezone=event.timezone,
            status=event.status.value,
            onsale_starts_at=event.onsale_starts_at,
            onsale_ends_at=event.onsale_ends_at,
            on_sale_now=bool(selling),
            price_from_minor=price_from,
            currency=currency,
            score=None if score is None else float(row_score),
            distance_km=None if distance is None else round(float(row_distance), 1),
        )
        for event, selling, price_from, currency, venue_name, row_score, row_distance in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(Cursor(tag, last.score, last.starts_at, last.id))
    return EventPage(items=items, next_cursor=next_cursor, facets=await _facets(session, filters))


async def _facets(session: AsyncSession, filters: EventFilters) -> list[CategoryCount]:
    # The category filter itself is left out: a fan who picked "music" still sees how many
    # comedy events the rest of the search would give, and can switch.
    query = _from_events(select(Event.category, func.count()).select_from(Event), filters)
    query = query.where(*_listed(), *filters.clauses(with_category=False)).group_by(Event.category)
    counts = {Category(category): int(count) for category, count in (await session.execute(query)).all()}
    return [CategoryCount(category=member.value, count=counts.get(member, 0)) for member in Category]


@dataclass(frozen=True)
class VenueInfo:
    id: uuid.UUID
    slug: str
    name: str
    address: str
    city: str
    country: str
    latitude: float
    longitude: float
    timezone: str


TierKind = Literal["seated", "ga"]


@dataclass(frozen=True)
class TierAvailability:
    """A price tier and what is left in it. ``available`` counts units a new hold could claim
    right now (free, or held past the deadline), by the same rule as the claim itself; it is
    a snapshot, and the claim statement stays the only authority. ``total`` excludes units
    withheld from sale."""

    id: uuid.UUID
    name: str
    price_minor: int
    currency: str
    kind: TierKind
    available: int
    total: int


@dataclass(frozen=True)
class EventDetail:
    id: uuid.UUID
    slug: str
    title: str
    performer: str
    description: str
    category: str
    city: str
    venue: VenueInfo
    starts_at: dt.datetime
    ends_at: dt.datetime
    timezone: str
    status: str
    onsale_starts_at: dt.datetime
    onsale_ends_at: dt.datetime
    on_sale_now: bool
    tiers: list[TierAvailability]


async def get_event(session: AsyncSession, event_id: uuid.UUID) -> EventDetail:
    """One public event (any status but draft, ended or not) with its venue and tiers.

    Raises:
        EventNotFound: no such event, or it is a draft.
    """
    row = (
        await session.execute(
            select(Event, Venue, on_sale_now().label("on_sale_now"))
            .join(Venue, Venue.id == Event.venue_id)
            .where(Event.id == event_id, Event.status != EventStatus.DRAFT)
        )
    ).first()
    if row is None:
        raise EventNotFound(f"There is no event {event_id}.")
    event, venue, selling = row
    claimable = func.count(InventoryUnit.id).filter(guard(Move.CLAIM))
    sellable = func.count(InventoryUnit.id).filter(InventoryUnit.state != UnitState.BLOCKED)
    tiers = (
        await session.execute(
            select(PriceTier, claimable, sellable)
            .outerjoin(
                InventoryUnit,
                and_(
                    InventoryUnit.price_tier_id == PriceTier.id, InventoryUnit.event_id == PriceTier.event_id
                ),
            )
            .where(PriceTier.event_id == event_id)
            .group_by(PriceTier.id)
            .order_by(PriceTier.sort_order, PriceTier.price_minor, PriceTier.name)
        )
    ).all()
    return EventDetail(
        id=event.id,
        slug=event.slug,
        title=event.title,
        performer=event.performer,
        description=event.description,
        category=event.category.value,
        city=event.city,
        venue=VenueInfo(
            id=venue.id,
            slug=venue.slug,
            name=venue.name,
            address=venue.address,
            city=venue.city,
            country=venue.country,
            latitude=venue.latitude,
            longitude=venue.longitude,
            timezone=venue.timezone,
        ),
        starts_at=event.starts_at,
        ends_at=event.ends_at,
        timezone=event.timezone,
        status=event.status.value,
        onsale_starts_at=event.onsale_starts_at,
        onsale_ends_at=event.onsale_ends_at,
        on_sale_now=bool(selling),
        tiers=[
            TierAvailability(
                id=tier.id,
                name=tier.name,
                price_minor=tier.price_minor,
                currency=tier.currency,
                kind="seated" if tier.ga_area_id is None else "ga",
                available=int(available),
                total=int(total),
            )
            for tier, available, total in tiers
        ],
    )
