"""Discovery: the events fans can look at."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas import EventList, EventSummary, Money, VenueRef
from booking.catalog import service


class EventController(Controller):
    path = "/events"
    tags = ["events"]

    @get("/", summary="List upcoming events", description="Soonest first, with cursor pagination.")
    async def list_events(
        self,
        db_session: NamedDependency[AsyncSession],
        limit: Annotated[int, Parameter(ge=1, le=service.MAX_PAGE, description="Page size")] = 20,
        cursor: Annotated[
            str | None, Parameter(max_length=200, description="next_cursor from the previous page")
        ] = None,
    ) -> EventList:
        page = await service.list_events(db_session, limit=limit, cursor=cursor)
        return EventList(
            items=[
                EventSummary(
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
                )
                for e in page.items
            ],
            next_cursor=page.next_cursor,
        )
