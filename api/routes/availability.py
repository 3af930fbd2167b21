"""Live availability for fans: the seat map of an event and the places left per tier."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import HeaderParameter
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from api.routes.events import EventRef, event_id_of
from api.schemas import Money
from booking.inventory import seatmap
from booking.redis_client import Breaker

log = logging.getLogger("boxoffice.api")
# Set on an answer served without Redis (from PostgreSQL directly): correct, but slower.
DEGRADED_HEADER = "Boxoffice-Degraded"

SeatState = Literal["available", "unavailable"]


class SeatOut(msgspec.Struct, frozen=True):
    id: int
    number: str
    x: float
    y: float
    accessible: bool
    tier_id: uuid.UUID
    price: Money
    state: SeatState


class RowOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    label: str
    seats: list[SeatOut]


class SectionOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    rows: list[RowOut]


class TierOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    kind: Literal["seated", "ga"]
    price: Money


class GATierOut(msgspec.Struct, frozen=True):
    tier_id: uuid.UUID
    price: Money
    remaining: int


class GAAreaOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    remaining: int
    tiers: list[GATierOut]


class SeatMap(msgspec.Struct, frozen=True):
    """An event's seat map. ``version`` grows with every change of the event's inventory
    that the map reflects; ``as_of`` is the database time of the state shown."""

    event_id: uuid.UUID
    version: int
    as_of: dt.datetime
    tiers: list[TierOut]
    sections: list[SectionOut]
    ga_areas: list[GAAreaOut]


class TierAvailabilityOut(msgspec.Struct, frozen=True):
    tier_id: uuid.UUID
    name: str
    kind: Literal["seated", "ga"]
    ga_area_id: uuid.UUID | None
    price: Money
    remaining: int


class AvailabilityOut(msgspec.Struct, frozen=True):
    event_id: uuid.UUID
    as_of: dt.datetime
    tiers: list[TierAvailabilityOut]


_encoder = msgspec.json.Encoder()


def render_seatmap(layout: seatmap.Layout, states: seatmap.SeatStates, version: int) -> bytes:
    """The wire body of a snapshot: the layout with each seat's state and each area's count."""
    prices = {tier.id: Money(amount_minor=tier.price_minor, currency=tier.currency) for tier in layout.tiers}
    taken = states.taken
    remaining = states.ga_remaining
    body = SeatMap(
        event_id=layout.event_id,
        version=version,
        as_of=states.as_of,
        tiers=[
            TierOut(id=t.id, name=t.name, kind="ga" if t.ga_area_id else "seated", price=prices[t.id])
            for t in layout.tiers
        ],
        sections=[
            SectionOut(
                id=section.id,
                name=section.name,
                rows=[
                    RowOut(
                        id=row.id,
                        label=row.label,
                        seats=[
                            SeatOut(
                                id=s.id,
                                number=s.number,
                                x=s.x,
                                y=s.y,
                                accessible=s.accessible,
                                tier_id=s.tier_id,
                                price=prices[s.tier_id],
                                state="unavailable" if s.id in taken else "available",
                            )
                            for s in row.seats
                        ],
                    )
                    for row in section.rows
                ],
            )
            for section in layout.sections
        ],
        ga_areas=[
            GAAreaOut(
                id=area.id,
                name=area.name,
                remaining=sum(remaining.get((area.id, tier), 0) for tier in area.tier_ids),
                tiers=[
                    GATierOut(tier_id=tier, price=prices[tier], remaining=remaining.get((area.id, tier), 0))
                    for tier in area.tier_ids
                ],
            )
            for area in layout.ga_areas
        ],
    )
    return _encoder.encode(body)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (``gzip;q=0`` refuses it)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False


SEATMAP_DESCRIPTION = (
    "Every seat of the event with its map position, tier, price and state, and each "
    "general-admission area with the places left. A seat is `available` when a hold could take it "
    "now (a held seat past its deadline is available). The map is a cached snapshot: it may lag a "
    "hold, sale or release by up to about a second (at most half a second between rebuilds, and "
    "at most a second when the change was not made through this API); "
    "`GET /events/{event_id}/availability` counts live. Send the `ETag` back in `If-None-Match` "
    "to get 304 while nothing changed. Served gzip-compressed when accepted. While the cache "
    "(Redis) is unreachable the map is built from the database, at most a second old, and the "
    "answer carries `Boxoffice-Degraded: redis-unavailable`."
)


NOT_FOUND = ResponseSpec(
    data_container=None,
    description="No such event, or not an event id or slug (problem+json, type event-not-found)",
    media_type="application/problem+json",
)


class AvailabilityController(Controller):
    # By id or slug, as the event's own page (api.routes.events).
    path = "/events/{event_id:str}"
    tags = ["availability"]

    @get(
        "/seatmap",
        summary="Seat map with live states",
        description=SEATMAP_DESCRIPTION,
        responses={
            200: ResponseSpec(
                data_container=SeatMap,
                description="The seat map; headers ETag, Cache-Control: no-cache, Vary: Accept-Encoding.",
            ),
            304: ResponseSpec(
                data_container=None, description="If-None-Match names the current ETag; no body."
            ),
            404: NOT_FOUND,
        },
    )
    async def get_seatmap(
        self,
        request: Request[Any, Any, State],
        state: State,
        db_session: NamedDependency[AsyncSession],
        event_id: EventRef,
        if_none_match: Annotated[
            str | None,
            HeaderParameter(
                name="If-None-Match",
                required=False,
                max_length=2000,
                description="ETag(s) of a seat map the client has",
                examples=[Example(value='W/"42-0123456789abcdef"')],
            ),
        ] = None,
    ) -> Response[bytes]:
        known = await event_id_of(db_session, event_id)
        tags = [tag.strip() for tag in if_none_match.split(",") if tag.strip()] if if_none_match else []
        gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
        breaker: Breaker = state.redis_breaker
        snapshot = None
        if breaker.allows():
            try:
                snapshot = await seatmap.SeatmapCache(state.redis).get(
                    db_session, known, render_seatmap, gzipped=gzipped, if_none_match=tags
                )
                breaker.succeeded()
            except RedisError as error:
                log.warning("seat map from PostgreSQL, Redis unreachable: %s", error)
                breaker.failed()
        headers = {}
        if snapshot is None:
            # Fans keep seeing the map through a Redis outage, from the database, at most
            # a second old and rebuilt at most once a second per event in this process.
            snapshot = await state.local_seatmaps.get(
                db_session, known, render_seatmap, gzipped=gzipped, if_none_match=tags
            )
            headers[DEGRADED_HEADER] = "redis-unavailable"
        headers.update({"ETag": snapshot.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"})
        if snapshot.body is None:
            return Response(content=b"", status_code=304, headers=headers)
        if snapshot.gzipped:
            headers["Content-Encoding"] = "gzip"
        return Response(content=snapshot.body, media_type="application/json", headers=headers)

    @get(
        "/availability",
        cache=True,
        summary="Places left per tier, counted at most a second ago",
        description=(
            "For each price tier of the event, how many places a hold could take, counted in "
            "the database at most a second ago (`as_of` says when). Holds decide who gets a "
            "place; this count only informs."
        ),
        responses={404: NOT_FOUND},
    )
    async def get_availability(
        self, db_session: NamedDependency[AsyncSession], event_id: EventRef
    ) -> AvailabilityOut:
        found = await seatmap.availability(db_session, await event_id_of(db_session, event_id))
        return AvailabilityOut(
            event_id=found.event_id,
            as_of=found.as_of,
            tiers=[
                TierAvailabilityOut(
                    tier_id=t.tier_id,
                    name=t.name,
                    kind="ga" if t.kind is seatmap.TierKind.GA else "seated",
                    ga_area_id=t.ga_area_id,
                    price=Money(amount_minor=t.price_minor, currency=t.currency),
                    remaining=t.remaining,
                )
                for t in found.tiers
            ],
        )
