"""Discovery: the events fans can look at, find and open."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas import (
    STORABLE_TEXT,
    CategoryCount,
    EventDetail,
    EventList,
    EventSummary,
    Facets,
    Money,
    TierAvailability,
    VenueDetail,
    VenueRef,
)
from booking.catalog import search, service
from booking.catalog.models import Category
from booking.errors import EventNotFound
from booking.ops import reads

_CATEGORIES = ", ".join(member.value for member in Category)
_WHEN = (
    "An ISO date (the whole day, venue time) or datetime (with an offset: an instant; without: venue time)"
)


# The longest slug an event can have (events.slug is varchar(120)).
MAX_SLUG_CHARS = 120
EVENT_REF = "The event's id (a uuid) or its slug (as in `GET /events`)"
EventRef = Annotated[str, Parameter(description=EVENT_REF)]


async def event_id_of(db_session: AsyncSession, ref: str) -> uuid.UUID:
    """The id of the event ``ref`` names: its id, read without a query, or its slug, looked up.
    Whether the event is public is left to the verb that reads it.

    Raises:
        EventNotFound: ``ref`` is neither a uuid nor a possible slug (the detail says which
            forms are expected), or no event has that slug.
    """
    try:
        return uuid.UUID(ref)
    except ValueError:
        pass
    # Refused before any query: what PostgreSQL cannot store cannot be a slug either.
    if not ref or len(ref) > MAX_SLUG_CHARS or not ref.isprintable():
        raise EventNotFound("Name the event by its id (a uuid) or its slug, as GET /events lists them.")
    return await reads.resolve_event(db_session, ref)


def _summary(e: service.EventSummary) -> EventSummary:
    return EventSummary(
        id=e.id,
        slug=e.slug,
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
            Money(amount_minor=e.price_from_minor, currency=e.currency)
            if e.price_from_minor is not None and e.currency is not None
            else None
        ),
        score=msgspec.UNSET if e.score is None else e.score,
        distance_km=msgspec.UNSET if e.distance_km is None else e.distance_km,
    )


def _text_param(max_length: int, description: str) -> Any:
    """A free-text query parameter: bounded, and free of what PostgreSQL cannot store."""
    return Parameter(pattern=STORABLE_TEXT, max_length=max_length, description=description)


# Reads are served from a per-process cache of whole responses (Litestar's response cache):
# a listing may lag a few seconds, an event's detail (with its places left) one second, so
# thousands of fans refreshing during an on-sale cost the database a query per second per
# distinct page instead of one per refresh.
SEARCH_CACHE_SECONDS = 3


class EventController(Controller):
    path = "/events"
    tags = ["events"]

    @get(
        "/",
        cache=SEARCH_CACHE_SECONDS,
        summary="Find upcoming events",
        description=(
            "Published events that have not ended. With `q`, best match first (title and performer "
            "count most, then venue and city, then description; small typos are forgiven); "
            "otherwise soonest first. All filters given must hold. `facets` counts events per "
            "category under all the other filters. Page with `next_cursor`, keeping the filters. "
            f"Answers may be up to {SEARCH_CACHE_SECONDS} s old."
        ),
    )
    async def list_events(
        self,
        db_session: NamedDependency[AsyncSession],
        q: Annotated[str | None, _text_param(search.MAX_KEYWORD_LENGTH, description="Keywords")] = None,
        date_from: Annotated[str | None, _text_param(40, description=f"Starts at or after. {_WHEN}")] = None,
        date_to: Annotated[str | None, _text_param(40, description=f"Starts at or before. {_WHEN}")] = None,
        city: Annotated[
            str | None, _text_param(search.MAX_CITY_LENGTH, description="City (any case)")
        ] = None,
        venue: Annotated[uuid.UUID | None, Parameter(description="Venue id")] = None,
        category: Annotated[str | None, _text_param(40, description=f"One of: {_CATEGORIES}")] = None,
        price_min: Annotated[
            int | None,
            Parameter(ge=0, le=search.MAX_PRICE_MINOR, description="A tier costs this or more (minor units)"),
        ] = None,
        price_max: Annotated[
            int | None,
            Parameter(ge=0, le=search.MAX_PRICE_MINOR, description="A tier costs this or less (minor units)"),
        ] = None,
        on_sale_now: Annotated[
            bool | None, Parameter(description="true: tickets can be bought now; false: not now")
        ] = None,
        lat: Annotated[float | None, Parameter(ge=-90, le=90, description="Latitude of a point")] = None,
        lon: Annotated[float | None, Parameter(ge=-180, le=180, description="Longitude of a point")] = None,
        radius_km: Annotated[
            float | None,
            Parameter(
                gt=0,
                le=search.MAX_RADIUS_KM,
                description=f"Venues within this distance of lat/lon (default {search.DEFAULT_RADIUS_KM:g})",
            ),
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=service.MAX_PAGE, description="Page size")] = 20,
        cursor: Annotated[
            str | None, _text_param(200, description="next_cursor from the previous page")
        ] = None,
    ) -> EventList:
        filters = search.EventFilters.parse(
            q=q,
            date_from=date_from,
            date_to=date_to,
            city=city,
            venue_id=venue,
            category=category,
            price_min=price_min,
            price_max=price_max,
            on_sale_now=on_sale_now,
            lat=lat,
            lon=lon,
            radius_km=radius_km,
        )
        page = await service.list_events(db_session, filters, limit=limit, cursor=cursor)
        return EventList(
            items=[_summary(e) for e in page.items],
            next_cursor=page.next_cursor,
            facets=Facets(category=[CategoryCount(category=f.category, count=f.count) for f in page.facets]),
        )

    @get(
        "/{event_id:str}",
        cache=True,
        summary="One event, by id or slug",
        description=(
            "The event, its venue, and each price tier with how many places are left "
            "(counted at most a second ago). `event_id` is the event's id or its slug; "
            "anything else is 404 `event-not-found`, saying which forms are expected."
        ),
    )
    async def get_event(self, db_session: NamedDependency[AsyncSession], event_id: EventRef) -> EventDetail:
        found = await event_id_of(db_session, event_id)
        try:
            e = await service.get_event(db_session, found)
        except EventNotFound:
            # A draft's slug answers as an unknown one, without the draft's id.
            raise EventNotFound(f"There is no event {event_id!r}.") from None
        v = e.venue
        return EventDetail(
            id=e.id,
            slug=e.slug,
            title=e.title,
            performer=e.performer,
            description=e.description,
            category=e.category,
            city=e.city,
            venue=VenueDetail(
                id=v.id,
                slug=v.slug,
                name=v.name,
                address=v.address,
                city=v.city,
                country=v.country,
                latitude=v.latitude,
                longitude=v.longitude,
                timezone=v.timezone,
            ),
            starts_at=e.starts_at,
            ends_at=e.ends_at,
            timezone=e.timezone,
            status=e.status,
            onsale_starts_at=e.onsale_starts_at,
            onsale_ends_at=e.onsale_ends_at,
            on_sale_now=e.on_sale_now,
            tiers=[
                TierAvailability(
                    id=t.id,
                    name=t.name,
                    price=Money(amount_minor=t.price_minor, currency=t.currency),
                    kind=t.kind,
                    available=t.available,
                    total=t.total,
                )
                for t in e.tiers
            ],
        )
