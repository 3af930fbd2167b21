"""``GET /events/{event}/seatmap/stream``: the seat map's changes as Server-Sent Events."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import HeaderParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from api.routes.availability import NOT_FOUND
from api.routes.events import EventRef, event_id_of
from api.seatmap_stream import KEEPALIVE_SECONDS, STREAM_HEADERS, SeatmapFeed, seatmap_events
from booking.errors import SeatmapStreamUnavailable
from booking.inventory import live
from booking.redis_client import Breaker

EVENT_STREAM = "text/event-stream"
# The longest id a client could have been sent is two 20-digit numbers and a dash.
MAX_LAST_EVENT_ID = 64

EXAMPLE_STREAM = (
    "retry: 3412\n\n"
    'event: snapshot-version\nid: 1764939600123-0\ndata: {"version":41}\n\n'
    'event: change\nid: 1764939601377-0\ndata: {"event_id":"6f1c9a52-3c57-4f7e-9b0e-2d1c5a7e8b10",'
    '"version":43,"as_of":"2026-12-05T12:00:01.350000Z","units":[{"state":"unavailable",'
    '"unit_ids":[8812,8813],"seat_ids":[1042,1043]}],"tiers":[{"tier_id":'
    '"0b7d2f4e-9a61-4c3b-8f25-7e4a1d9c6b03","remaining":118}]}\n\n'
    ": keep-alive\n\n"
)

STREAM_DESCRIPTION = (
    "Server-Sent Events of the seat map's changes, for as long as the client listens. "
    'Without `Last-Event-ID`: a `snapshot-version` event (`{"version": n}`) first, so a client '
    "can tell whether the snapshot it holds (`GET /events/{event_id}/seatmap`, its `version`) is "
    "older; then a `change` event per change: the version, the units whose state changed (and "
    "their seat ids) with their state now, and the places left in each tier they belong to. "
    "Apply a change whose `version` is greater than your snapshot's. Each event has an id: "
    "reconnecting with `Last-Event-ID` sends exactly the changes missed, when that id is still "
    f"in the history (the last {live.HISTORY_MESSAGES} changes of the event, for up to "
    f"{live.HISTORY_SECONDS // 60} minutes after the last one); otherwise (older, unknown or "
    'not an id) one `refetch` event (`{"version": n, "reason": ...}`): GET the snapshot, then go '
    "on. A client too slow to keep up gets `refetch` too. If the live feed (Redis) is lost, the "
    "stream sends `refetch` with a null version and ends; while it is away, connecting answers "
    "503 `seatmap-stream-unavailable`. A `: keep-alive` comment comes after "
    f"{KEEPALIVE_SECONDS:g} s of quiet."
)


class SeatmapStreamController(Controller):
    # By id or slug, as the event's own page and its seat map.
    path = "/events/{event_id:str}"
    tags = ["availability"]

    @get(
        "/seatmap/stream",
        # Long-lived: counted against the in-flight bound only until it starts (api.overload).
        opt={"stream": True},
        summary="Live seat-map changes (Server-Sent Events)",
        description=STREAM_DESCRIPTION,
        responses={
            200: ResponseSpec(
                data_container=str,
                media_type=EVENT_STREAM,
                generate_examples=False,
                examples=[Example(summary="The start of a stream", value=EXAMPLE_STREAM)],
                description=(
                    "An event stream (`retry`, then `snapshot-version`, `change`, `refetch` events and "
                    "keep-alive comments); headers Cache-Control: no-cache, X-Accel-Buffering: no."
                ),
            ),
            404: NOT_FOUND,
        },
    )
    async def stream_seatmap(
        self,
        state: State,
        db_session: NamedDependency[AsyncSession],
        event_id: EventRef,
        last_event_id: Annotated[
            str | None,
            HeaderParameter(
                name="Last-Event-ID",
                required=False,
                max_length=MAX_LAST_EVENT_ID,
                description="The id of the last event received, to resume from (browsers send it themselves)",
                examples=[Example(value="1764939600123-0")],
            ),
        ] = None,
    ) -> Stream:
        known = await event_id_of(db_session, event_id)
        await live.check_event(db_session, known)
        feed: SeatmapFeed = state.seatmap_feed
        breaker: Breaker = state.redis_breaker
        if not feed.accepting or not breaker.allows():
            raise SeatmapStreamUnavailable()
        return Stream(
            # An empty id is what a client that never had one would send: none.
            seatmap_events(feed, state.redis, breaker, known, last_event_id or None),
            media_type=EVENT_STREAM,
            headers=STREAM_HEADERS,
        )
