"""Reading the catalog: upcoming events, oldest first, with keyset pagination."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.models import Event, EventStatus, PriceTier, Venue
from booking.errors import InvalidCursor

MAX_PAGE = 100


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


@dataclass(frozen=True)
class EventPage:
    items: list[EventSummary]
    next_cursor: str | None


def encode_cursor(starts_at: dt.datetime, event_id: uuid.UUID) -> str:
    raw = f"{starts_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """Raises: InvalidCursor when the cursor was not made by ``encode_cursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        starts_at = dt.datetime.fromisoformat(when)
        if starts_at.tzinfo is None:
            raise ValueError("naive time")
        return starts_at, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor(cursor) from None


async def list_events(session: AsyncSession, *, limit: int = 20, cursor: str | None = None) -> EventPage:
    """Published events that have not ended, soonest first.

    Raises:
        InvalidCursor: ``cursor`` is not one this function returned.
    """
    limit = max(1, min(limit, MAX_PAGE))
    now = func.now()
    price = (
        select(
            PriceTier.event_id,
            func.min(PriceTier.price_minor).label("price_from"),
            func.min(PriceTier.currency).label("currency"),
        )
        .group_by(PriceTier.event_id)
        .subquery()
    )
    on_sale_now = and_(
        Event.status == EventStatus.ON_SALE, Event.onsale_starts_at <= now, now < Event.onsale_ends_at
    )
    query = (
        select(Event, Venue.name, on_sale_now.label("on_sale_now"), price.c.price_from, price.c.currency)
        .join(Venue, Venue.id == Event.venue_id)
        .outerjoin(price, price.c.event_id == Event.id)
        .where(Event.status.in_([EventStatus.ON_SALE, EventStatus.PAUSED]), Event.ends_at > now)
        .order_by(Event.starts_at, Event.id)
        .limit(limit + 1)
    )
    if cursor is not None:
        after_time, after_id = decode_cursor(cursor)
        query = query.where(tuple_(Event.starts_at, Event.id) > tuple_(after_time, after_id))
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
        )
        for event, venue_name, selling, price_from, currency in rows[:limit]
    ]
    next_cursor = encode_cursor(items[-1].starts_at, items[-1].id) if len(rows) > limit else None
    return EventPage(items=items, next_cursor=next_cursor)
