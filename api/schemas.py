"""Wire schemas (msgspec): what the API promises its clients, field by field."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec


class Money(msgspec.Struct, frozen=True):
    amount_minor: int
    currency: str


class VenueRef(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str


class EventSummary(msgspec.Struct, frozen=True):
    id: uuid.UUID
    slug: str
    title: str
    performer: str
    category: str
    city: str
    venue: VenueRef
    starts_at: dt.datetime
    timezone: str
    status: str
    onsale_starts_at: dt.datetime
    onsale_ends_at: dt.datetime
    on_sale_now: bool
    price_from: Money | None


class EventList(msgspec.Struct, frozen=True):
    items: list[EventSummary]
    next_cursor: str | None


class Health(msgspec.Struct, frozen=True):
    status: str
    database: str
    redis: str
