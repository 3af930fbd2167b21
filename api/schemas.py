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


class Liveness(msgspec.Struct, frozen=True):
    """The process is serving: ``GET /health`` asks nothing of any other server."""

    status: Literal["ok"]


class ReadyCheck(msgspec.Struct, frozen=True):
    status: Literal["ok", "unavailable"]
    # How long the check took, up to its deadline (about a second) when the server is away.
    latency_ms: float


class MigrationsReadyCheck(msgspec.Struct, frozen=True):
    # behind: the database lacks migrations this code needs (`boxoffice db upgrade`);
    # ahead: a newer release migrated it; unavailable: the database could not be asked.
    status: Literal["ok", "behind", "ahead", "unavailable"]
    latency_ms: float
    # Comma-separated when there are several heads; null for a database with none applied or
    # one that could not be asked.
    database_revision: str | None
    code_revision: str


class ReadyChecks(msgspec.Struct, frozen=True):
    database: ReadyCheck
    redis: ReadyCheck
    migrations: MigrationsReadyCheck


class DaemonReadiness(msgspec.Struct, frozen=True):
    """The worker daemons as their heartbeats in Redis show them. Informational: the API
    serves without them (mail, sweeps and relays wait), so this never makes it unready."""

    # alive: at least one daemon beats; stale: records are left but none beats; missing: no
    # daemon has beaten recently; unknown: Redis could not be read.
    status: Literal["alive", "stale", "missing", "unknown"]
    # Seconds since the newest heartbeat of any daemon; null when there is none.
    last_heartbeat_age_seconds: float | None
    alive: int
    stale: int


class Readiness(msgspec.Struct, frozen=True):
    status: Literal["ready", "not_ready"]
    checks: ReadyChecks
    daemon: DaemonReadiness


class TicketKey(msgspec.Struct, frozen=True):
    """One key that verifies ticket codes, as a JSON Web Key (RFC 7517/8037): ``x`` is the
    raw 32-byte Ed25519 public key in base64url, ``kid`` the id tokens name it by."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    kid: str
    x: str
    use: Literal["sig"]
    alg: Literal["EdDSA"]
    # The window the key is trusted in (ISO 8601, UTC); null: open-ended.
    not_before: str | None
    not_after: str | None


class TicketKeySet(msgspec.Struct, frozen=True):
    """Every key a gate should trust now; the first signs new tickets."""

    keys: list[TicketKey]
