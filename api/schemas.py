"""Wire schemas (msgspec): what the API promises its clients, field by field."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

# PostgreSQL text cannot hold NUL (U+0000). Every string that reaches the database is checked
# against this at the edge, so such input is a 400 naming the field, not a driver error.
STORABLE_TEXT = "^[^\\x00]*$"
Text = Annotated[str, msgspec.Meta(pattern=STORABLE_TEXT)]


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
    # Relevance to ``q`` (higher is better): present only when searching by keyword.
    score: float | msgspec.UnsetType = msgspec.UNSET
    # Kilometres from lat/lon: present only when searching near a point.
    distance_km: float | msgspec.UnsetType = msgspec.UNSET


class CategoryCount(msgspec.Struct, frozen=True):
    category: str
    count: int


class Facets(msgspec.Struct, frozen=True):
    # Every category with how many events match all the other filters (the category filter
    # itself left out), so a client can show counts next to each choice.
    category: list[CategoryCount]


class EventList(msgspec.Struct, frozen=True):
    items: list[EventSummary]
    next_cursor: str | None
    facets: Facets


class VenueDetail(msgspec.Struct, frozen=True):
    id: uuid.UUID
    slug: str
    name: str
    address: str
    city: str
    country: str
    latitude: float
    longitude: float
    timezone: str


class TierAvailability(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    price: Money
    kind: Literal["seated", "ga"]
    # Places a hold could take right now (expired holds count as free); a snapshot.
    available: int
    # Places sold through this tier in all, less those withheld from sale.
    total: int


class EventDetail(msgspec.Struct, frozen=True):
    id: uuid.UUID
    slug: str
    title: str
    performer: str
    description: str
    category: str
    city: str
    venue: VenueDetail
    starts_at: dt.datetime
    ends_at: dt.datetime
    timezone: str
    status: str
    onsale_starts_at: dt.datetime
    onsale_ends_at: dt.datetime
    on_sale_now: bool
    tiers: list[TierAvailability]


class Health(msgspec.Struct, frozen=True):
    status: str
    database: str
    redis: str
