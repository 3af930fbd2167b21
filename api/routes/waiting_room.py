"""The virtual waiting room over HTTP: fans join, watch their place and leave; staff set a
room up, watch it, pause and resume it. ``booking.waiting_room.service`` decides everything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import SECURITY
from api.routes.events import EventRef, event_id_of
from api.staff import ON_CALL, STAFF_SECURITY, audit_detail
from booking.accounts.fans import Principal
from booking.accounts.staff import StaffPrincipal
from booking.errors import (
    BookingError,
    EventNotFound,
    NotInQueue,
    WaitingRoomNotActive,
    WaitingRoomUnavailable,
)
from booking.logs import get_logger
from booking.waiting_room import models as m
from booking.waiting_room import service as rooms
from booking.waiting_room.service import Place, PlaceState, RoomStatus

log = get_logger("boxoffice.api.waiting_room")

EVENT_STREAM = "text/event-stream"
# The stream asks where the fan stands this often (each ask keeps the place, like a poll).
STREAM_POLL_SECONDS = 2.0
KEEPALIVE_SECONDS = 15.0
# A stream ends after this long even while the fan waits; EventSource reconnects by itself
# (after ``RETRY_MS``), so no connection lives for ever behind a load balancer.
STREAM_MAX_SECONDS = 600.0
RETRY_MS = 3000


# --- fans ----------------------------------------------------------------------------------


class AdmissionOut(msgspec.Struct, frozen=True):
    # Send it as the Admission-Token header of POST /holds and POST /holds/{id}/checkout;
    # null once the admission has ended.
    token: str | None
    expires_at: dt.datetime
    ended_at: dt.datetime | None


class PlaceOut(msgspec.Struct, frozen=True):
    """A fan's place. ``state``: ``waiting`` (joined before the sale opens: places are drawn
    at random then), ``queued`` (``position`` 1 is next), ``admitted`` (``admission.token``
    until ``admission.expires_at``), ``ended`` (the admission was used up or given up),
    ``left``. ``estimated_wait_seconds`` divides the place by ``admission_rate_per_minute``,
    measured over the last minute when ``rate_measured``, else the room's setting; null while
    paused. Check again within ``check_every_seconds`` to keep the place."""

    event_id: uuid.UUID
    state: Literal["waiting", "queued", "admitted", "ended", "left"]
    position: int | None
    fans_ahead: int | None
    estimated_wait_seconds: float | None
    admission_rate_per_minute: float | None
    rate_measured: bool
    sale_opens_at: dt.datetime | None
    paused: bool
    check_every_seconds: int
    admission: AdmissionOut | None


def place_out(place: Place) -> PlaceOut:
    admission = place.admission
    return PlaceOut(
        event_id=place.event_id,
        state=place.state.value,
        position=place.position,
        fans_ahead=place.fans_ahead,
        estimated_wait_seconds=place.estimated_wait_seconds,
        admission_rate_per_minute=place.rate_per_minute,
        rate_measured=place.rate_measured,
        sale_opens_at=place.room.sale_opens_at,
        paused=place.room.paused,
        check_every_seconds=place.room.poll_seconds,
        admission=(
            AdmissionOut(admission.token, admission.window_ends_at, admission.ended_at)
            if admission is not None
            else None
        ),
    )


_encoder = msgspec.json.Encoder()

EXAMPLE_STREAM = (
    f"retry: {RETRY_MS}\n\n"
    'event: queued\ndata: {"event_id":"6f1c9a52-3c57-4f7e-9b0e-2d1c5a7e8b10","state":"queued",'
    '"position":1042,"fans_ahead":1041,"estimated_wait_seconds":125.0,...}\n\n'
    ": keep-alive\n\n"
    'event: admitted\ndata: {"event_id":"6f1c9a52-3c57-4f7e-9b0e-2d1c5a7e8b10","state":"admitted",'
    '...,"admission":{"token":"...","expires_at":"2026-12-05T12:10:00Z","ended_at":null}}\n\n'
)

STREAM_DESCRIPTION = (
    "Your place as Server-Sent Events: the same body as `GET /events/{event_id}/queue/me`, as an "
    "event named by its `state` (`waiting`, `queued`, `admitted`, `ended`) each time it changes, "
    f"and a `: keep-alive` comment after {KEEPALIVE_SECONDS:g} s without one. Listening keeps "
    "your place, as polling does. The stream ends after `admitted` (the token is in it) or "
    "`ended`; with `closed` when the room closes (buy without a token), `lost` when you have no "
    "place any more (join again), `unavailable` when the room cannot be reached for a moment "
    f"(reconnect: `retry` is {RETRY_MS} ms); and after {STREAM_MAX_SECONDS / 60:g} minutes in "
    "any case, for the browser to reconnect."
)


def _notice(event: str, error: BookingError) -> ServerSentEventMessage:
    body = {"event": event, "code": error.code, "title": error.title, "detail": error.detail}
    return ServerSentEventMessage(data=_encoder.encode(body).decode(), event=event)


async def _place_events(
    state: State, event_id: uuid.UUID, fan_id: uuid.UUID
) -> AsyncIterator[ServerSentEventMessage]:
    """The fan's place, each time it changes, until admitted, ended, closed or lost."""
    yield ServerSentEventMessage(data=None, retry=RETRY_MS)
    started = last_sent = time.monotonic()
    sent: bytes | None = None
    while True:
        try:
            async with state.sessionmaker() as session:
                place = await rooms.position(
                    session,
                    state.redis,
                    event_id,
                    fan_id,
                    signing_key=state.signing_keys.ticket_key,
                    rooms=state.waiting_rooms,
                    breaker=state.redis_breaker,
                )
        except (WaitingRoomNotActive, EventNotFound) as error:
            yield _notice("closed", error)
            return
        except NotInQueue as error:
            yield _notice("lost", error)
            return
        except WaitingRoomUnavailable as error:
            yield _notice("unavailable", error)
            return
        body = _encoder.encode(place_out(place))
        if body != sent:
            yield ServerSentEventMessage(data=body.decode(), event=place.state.value)
            sent, last_sent = body, time.monotonic()
        if place.state in (PlaceState.ADMITTED, PlaceState.ENDED, PlaceState.LEFT):
            return
        if time.monotonic() - started >= STREAM_MAX_SECONDS:
            return
        await asyncio.sleep(STREAM_POLL_SECONDS)
        if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
            yield ServerSentEventMessage(data=None, comment="keep-alive")
            last_sent = time.monotonic()


class QueueController(Controller):
    # By id or slug, as the event's own page.
    path = "/events/{event_id:str}/queue"
    tags = ["waiting room"]
    security = SECURITY

    @post(
        "/",
        status_code=200,
        summary="Join the event's waiting room",
        description=(
            "Gives you a place, or tells you the one you have: joining again changes nothing. Fans "
            "who join before the sale opens are placed in a random order when it opens; later fans "
            "queue in the order they arrive. Keep checking your place (`GET .../queue/me` or the "
            "stream) within `check_every_seconds`, or lose it. Once admitted you are admitted for "
            "good: joining again shows that admission, never a new window. 409 "
            "`waiting-room-not-active` when the event has no open room (buy directly)."
        ),
        opt={"idempotency_key": "natural", "rate_limit": "queue"},
    )
    async def join(
        self,
        state: State,
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        event_id: EventRef,
    ) -> PlaceOut:
        known = await event_id_of(db_session, event_id)
        place = await rooms.join(
            db_session,
            state.redis,
            known,
            fan.fan_id,
            signing_key=state.signing_keys.ticket_key,
            rooms=state.waiting_rooms,
            breaker=state.redis_breaker,
        )
        return place_out(place)

    @get(
        "/me",
        summary="Your place in the waiting room",
        description=(
            "Your position, the fans ahead, the estimated wait and, once admitted, the admission "
            "token and its expiry. Asking keeps your place."
        ),
    )
    async def me(
        self,
        state: State,
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        event_id: EventRef,
    ) -> PlaceOut:
        known = await event_id_of(db_session, event_id)
        place = await rooms.position(
            db_session,
            state.redis,
            known,
            fan.fan_id,
            signing_key=state.signing_keys.ticket_key,
            rooms=state.waiting_rooms,
            breaker=state.redis_breaker,
        )
        return place_out(place)

    @delete(
        "/me",
        status_code=200,
        summary="Leave the waiting room",
        description=(
            "Gives up your place (`left`: joining again queues you at the back), or, once "
            "admitted, ends your shopping window early (`ended`: the token is refused from now on, "
            "and the next fan is let in)."
        ),
        opt={"idempotency_key": "natural"},
    )
    async def leave(
        self,
        state: State,
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        event_id: EventRef,
    ) -> PlaceOut:
        known = await event_id_of(db_session, event_id)
        place = await rooms.leave(
            db_session,
            state.redis,
            known,
            fan.fan_id,
            rooms=state.waiting_rooms,
            breaker=state.redis_breaker,
        )
        log.info("left the waiting room", event_id=known, state=place.state.value)
        return place_out(place)

    @get(
        "/me/stream",
        # Long-lived: counted against the in-flight bound only until it starts (api.overload).
        opt={"stream": True},
        summary="Your place in the waiting room, as Server-Sent Events",
        description=STREAM_DESCRIPTION,
        responses={
            200: ResponseSpec(
                data_container=str,
                media_type=EVENT_STREAM,
                generate_examples=False,
                examples=[Example(summary="A wait, then the admission", value=EXAMPLE_STREAM)],
                description="An event stream; headers Cache-Control: no-cache, X-Accel-Buffering: no.",
            )
        },
    )
    async def stream(
        self, state: State, fan: NamedDependency[Principal], event_id: EventRef
    ) -> ServerSentEvent:
        # Checked before the stream starts, so a fan without a place gets a problem answer;
        # no connection is kept while it runs.
        async with state.sessionmaker() as session:
            known = await event_id_of(session, event_id)
            await rooms.position(
                session,
                state.redis,
                known,
                fan.fan_id,
                signing_key=state.signing_keys.ticket_key,
                rooms=state.waiting_rooms,
                breaker=state.redis_breaker,
            )
        return ServerSentEvent(_place_events(state, known, fan.fan_id))


# --- staff ---------------------------------------------------------------------------------

Rate = Annotated[int, msgspec.Meta(ge=m.MIN_RATE_PER_MINUTE, le=m.MAX_RATE_PER_MINUTE)]
Window = Annotated[int, msgspec.Meta(ge=m.MIN_WINDOW_SECONDS, le=m.MAX_WINDOW_SECONDS)]
Grace = Annotated[int, msgspec.Meta(ge=m.MIN_GRACE_SECONDS, le=m.MAX_GRACE_SECONDS)]
Shoppers = Annotated[int, msgspec.Meta(ge=1, le=m.MAX_SHOPPERS_LIMIT)]
Instant = Annotated[dt.datetime, msgspec.Meta(tz=True)]


class RoomSettingsIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The settings to change; a field left out keeps its value (a new room starts disabled,
    at 500 fans a minute, 600 s windows, a 120 s grace, no shopper limit, the sale opening
    with the event's on-sale start). ``opens_at`` (fans may join from then) and
    ``max_shoppers`` may be null: no such bound."""

    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    opens_at: Instant | msgspec.UnsetType | None = msgspec.UNSET
    sale_opens_at: Instant | msgspec.UnsetType = msgspec.UNSET
    rate_per_minute: Rate | msgspec.UnsetType = msgspec.UNSET
    window_seconds: Window | msgspec.UnsetType = msgspec.UNSET
    max_shoppers: Shoppers | msgspec.UnsetType | None = msgspec.UNSET
    grace_seconds: Grace | msgspec.UnsetType = msgspec.UNSET


class WaitingRoomOut(msgspec.Struct, frozen=True):
    """A room's settings and how it is doing. ``active``: it gates holds now (enabled, before
    the event's on-sale end, ``closes_at``). ``waiting``: fans in the queue; ``shopping``:
    admitted fans whose window has not ended; ``admitted_total``: every fan admitted;
    ``eta_seconds_for_last``: until the last fan waiting now is admitted (null while
    paused). ``redis_ok`` false: the queue could not be read (``waiting`` 0, no measured rate)."""

    event_id: uuid.UUID
    enabled: bool
    active: bool
    paused: bool
    opens_at: dt.datetime | None
    sale_opens_at: dt.datetime | None
    closes_at: dt.datetime | None
    rate_per_minute: int
    window_seconds: int
    max_shoppers: int | None
    grace_seconds: int
    waiting: int
    shopping: int
    admitted_total: int
    measured_rate_per_minute: float | None
    eta_seconds_for_last: float | None
    redis_ok: bool


def room_out(status: RoomStatus, now: dt.datetime | None = None) -> WaitingRoomOut:
    room = status.settings
    return WaitingRoomOut(
        event_id=room.event_id,
        enabled=room.enabled,
        active=room.active(now or dt.datetime.now(dt.UTC)),
        paused=room.paused,
        opens_at=room.opens_at,
        sale_opens_at=room.sale_opens_at,
        closes_at=room.closes_at,
        rate_per_minute=room.rate_per_minute,
        window_seconds=room.window_seconds,
        max_shoppers=room.max_shoppers,
        grace_seconds=room.grace_seconds,
        waiting=status.depth,
        shopping=status.shopping,
        admitted_total=status.admitted_total,
        measured_rate_per_minute=status.measured_rate_per_minute,
        eta_seconds_for_last=status.eta_seconds_for_last,
        redis_ok=status.redis_ok,
    )


class WaitingRoomStaffController(Controller):
    path = "/staff/events/{event_id:uuid}/waiting-room"
    tags = ["staff"]
    security = STAFF_SECURITY

    async def _status(self, state: State, session: AsyncSession, event_id: uuid.UUID) -> WaitingRoomOut:
        return room_out(await rooms.room_status(session, state.redis, event_id, breaker=state.redis_breaker))

    @get(
        "/",
        summary="An event's waiting room: its settings and live numbers",
        opt={"roles": ON_CALL},
    )
    async def show(
        self,
        state: State,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
    ) -> WaitingRoomOut:
        return await self._status(state, db_session, event_id)

    @put(
        "/",
        summary="Set up or change an event's waiting room",
        description=(
            "Fields left out keep their value; a room is created on first use (disabled). While "
            "`enabled`, holds and checkouts on the event need an admission token (until the "
            "event's on-sale end). Bounds: rate 1..100000 fans a minute, window 60..3600 s, grace "
            "10..3600 s, `opens_at` not after `sale_opens_at`; the opening of a sale under way "
            "cannot move (409)."
        ),
        opt={"roles": ON_CALL, "audit": "waiting_room.set", "audit_target": "event"},
    )
    async def set_up(
        self,
        request: Request[Any, Any, Any],
        state: State,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
        data: JSONBody[RoomSettingsIn],
    ) -> WaitingRoomOut:
        given = {
            name: value for name, value in msgspec.structs.asdict(data).items() if value is not msgspec.UNSET
        }

        def value(name: str) -> Any:
            return given.get(name)

        await rooms.set_room(
            db_session,
            event_id,
            enabled=value("enabled"),
            opens_at=value("opens_at"),
            sale_opens_at=value("sale_opens_at"),
            rate_per_minute=value("rate_per_minute"),
            window_seconds=value("window_seconds"),
            max_shoppers=value("max_shoppers"),
            grace_seconds=value("grace_seconds"),
            clear=[name for name, given_value in given.items() if given_value is None],
        )
        state.waiting_rooms.forget()
        audit_detail(
            request, **{k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in given.items()}
        )
        return await self._status(state, db_session, event_id)

    @post(
        "/pause",
        status_code=200,
        summary="Pause admission",
        description=(
            "Nobody more is admitted; fans keep their places and may still join, and those "
            "admitted keep their windows. 409 when already paused."
        ),
        opt={"roles": ON_CALL, "audit": "waiting_room.pause", "audit_target": "event"},
    )
    async def pause(
        self,
        state: State,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
    ) -> WaitingRoomOut:
        await rooms.pause_room(db_session, event_id)
        state.waiting_rooms.forget()
        return await self._status(state, db_session, event_id)

    @post(
        "/resume",
        status_code=200,
        summary="Resume admission",
        description="Admission goes on at the room's rate, with no burst for the time paused. 409 unless"
        " paused.",
        opt={"roles": ON_CALL, "audit": "waiting_room.resume", "audit_target": "event"},
    )
    async def resume(
        self,
        state: State,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
    ) -> WaitingRoomOut:
        await rooms.resume_room(db_session, event_id)
        state.waiting_rooms.forget()
        return await self._status(state, db_session, event_id)
