"""`boxoffice waiting-room`: an event's virtual waiting room, seen and steered from a terminal.

The same ``booking.waiting_room.service`` verbs as the staff API (``/staff/events/{id}/
waiting-room``), with the same checks and audit actions (``waiting_room.set``, ``.pause``,
``.resume``; actor: the person at this terminal). Settings are PostgreSQL's, so ``set``,
``pause`` and ``resume`` work while Redis is away; ``status`` then says it could not count
the queue rather than failing.

Like every command module, loading this one costs only Typer: the services are imported
inside each command.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from console.cli_common import (
    ID,
    PROSE,
    Column,
    JsonOption,
    YesOption,
    audited,
    confirm,
    count,
    duration,
    fail,
    nothing,
    ops_redis_url,
    report,
    settings_of,
    show,
    when,
    with_session,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncSession

    from booking.settings import Settings
    from booking.waiting_room.service import RoomSettings, RoomStatus

waiting_room_app = typer.Typer(
    help="An event's virtual waiting room: status, settings, pause and resume.", no_args_is_help=True
)

T = TypeVar("T")
EventArgument = Annotated[str, typer.Argument(metavar="EVENT", help="Event id or slug.")]


def _with_redis(settings: Settings, work: Callable[[AsyncSession, Redis], Awaitable[T]], subject: str) -> T:
    """``with_session`` with an async Redis client too, closed when the work ends."""
    from booking.redis_client import async_client

    url = ops_redis_url(settings)

    async def run(session: AsyncSession) -> T:
        # A person may wait a little longer than a request; the status never raises for Redis.
        redis = async_client(url, command_timeout=5.0)
        try:
            return await work(session, redis)
        finally:
            await redis.aclose()

    return with_session(settings, run, subject)


def _parse_time(option: str, text: str | None) -> dt.datetime | None:
    """An ISO 8601 time with its offset (``2027-03-01T10:00:00+01:00``, or ``...Z``)."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint=option) from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no time zone: add +01:00 or Z", param_hint=option)
    return moment


def _room_facts(room: RoomSettings) -> dict[str, Any]:
    return {
        "target_id": str(room.event_id),
        "enabled": room.enabled,
        "paused": room.paused,
        "rate_per_minute": room.rate_per_minute,
        "window_seconds": room.window_seconds,
    }


def _state(room: RoomSettings, now: dt.datetime) -> str:
    if not room.enabled:
        return "disabled"
    if not room.active(now):
        return "closed"
    if room.paused:
        return "paused"
    if not room.sale_open(now):
        return f"draws at {when(room.sale_opens_at)}"
    return "admitting"


def _status_display(status: RoomStatus) -> dict[str, Any]:
    room = status.settings
    now = dt.datetime.now(dt.UTC)
    measured = status.measured_rate_per_minute
    shopping = str(status.shopping) + ("" if room.max_shoppers is None else f"/{room.max_shoppers}")
    rate = f"{room.rate_per_minute}/min" + ("" if measured is None else f" ({measured:.0f} measured)")
    return {
        "event": str(room.event_id),
        "state": _state(room, now),
        "waiting": status.depth if status.redis_ok else "? (Redis away)",
        "shopping": shopping,
        "admitted": status.admitted_total,
        "rate": rate,
        "window": duration(room.window_seconds),
        "eta": ""
        if status.eta_seconds_for_last is None or not status.depth
        else duration(status.eta_seconds_for_last),
    }


STATUS_COLUMNS = [
    Column("event", "Event", ID),
    Column("state", "State", PROSE),
    Column("waiting", "Waiting"),
    Column("shopping", "Shopping"),
    Column("admitted", "Admitted"),
    Column("rate", "Rate"),
    Column("window", "Window"),
    Column("eta", "Last in by"),
]


@waiting_room_app.command("status")
def waiting_room_status(
    ctx: typer.Context,
    event: Annotated[
        str | None, typer.Argument(metavar="[EVENT]", help="Event id or slug; all enabled rooms without it.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Fans waiting and shopping, admission rate and when the last fan waiting gets in. Exit 3
    when no room is enabled."""
    from booking.ops import reads
    from booking.waiting_room import service as rooms

    async def work(session: AsyncSession, redis: Redis) -> list[rooms.RoomStatus]:
        if event is None:
            return await rooms.rooms_status(session, redis)
        return [await rooms.room_status(session, redis, await reads.resolve_event(session, event))]

    found = _with_redis(settings_of(ctx), work, f"event {event}" if event else "")
    if event is None and not found:
        nothing("No waiting room is enabled.", as_json, {"items": []})
    show(
        found,
        STATUS_COLUMNS,
        as_json=as_json,
        title="Waiting rooms",
        empty="No waiting room is enabled.",
        display=_status_display,
    )


@waiting_room_app.command("set")
def waiting_room_set(
    ctx: typer.Context,
    event: EventArgument,
    enable: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Gate the event's holds behind the room, or stop gating."),
    ] = None,
    opens_at: Annotated[
        str | None, typer.Option("--opens-at", help="When fans may start joining (ISO 8601 with offset).")
    ] = None,
    sale_opens_at: Annotated[
        str | None,
        typer.Option("--sale-opens-at", help="When the early fans are drawn and admission starts."),
    ] = None,
    rate: Annotated[int | None, typer.Option("--rate", help="Fans admitted a minute.", min=1)] = None,
    window: Annotated[
        int | None, typer.Option("--window", help="Minutes an admitted fan may shop.", min=1, max=60)
    ] = None,
    max_shoppers: Annotated[
        int | None, typer.Option("--max-shoppers", help="At most this many fans shopping at once.", min=1)
    ] = None,
    no_max_shoppers: Annotated[
        bool, typer.Option("--no-max-shoppers", help="No limit on fans shopping at once.")
    ] = False,
    grace: Annotated[
        int | None,
        typer.Option(
            "--grace", help="Seconds a waiting fan may go without checking before losing the place."
        ),
    ] = None,
    anytime: Annotated[
        bool,
        typer.Option(
            "--join-anytime", help="Fans may join whenever the room is enabled (clears --opens-at)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create or change the event's room; options left out stay as they are."""
    from booking.ops import reads
    from booking.waiting_room import service as rooms

    if max_shoppers is not None and no_max_shoppers:
        fail("give --max-shoppers or --no-max-shoppers, not both", code=2)
    if opens_at is not None and anytime:
        fail("give --opens-at or --join-anytime, not both", code=2)
    changes: dict[str, Any] = {
        "enabled": enable,
        "opens_at": _parse_time("--opens-at", opens_at),
        "sale_opens_at": _parse_time("--sale-opens-at", sale_opens_at),
        "rate_per_minute": rate,
        "window_seconds": None if window is None else window * 60,
        "max_shoppers": max_shoppers,
        "grace_seconds": grace,
    }
    clear = [name for name, asked in (("max_shoppers", no_max_shoppers), ("opens_at", anytime)) if asked]
    if all(value is None for value in changes.values()) and not clear:
        fail("nothing to set: give at least one option (see --help)", code=2)

    async def act(session: AsyncSession) -> RoomSettings:
        event_id = await reads.resolve_event(session, event)
        return await rooms.set_room(session, event_id, clear=clear, **changes)

    async def work(session: AsyncSession) -> RoomSettings:
        return await audited(
            session,
            lambda: act(session),
            action="waiting_room.set",
            target_type="event",
            target_id=event,
            details=_room_facts,
        )

    room = with_session(settings_of(ctx), work, f"event {event}")
    report(as_json, room, _summary(room))


def _summary(room: RoomSettings) -> str:
    gate = "enabled" if room.enabled else "disabled"
    shoppers = "" if room.max_shoppers is None else f", at most {count(room.max_shoppers, 'fan')} shopping"
    opens = f"fans join from {when(room.opens_at)}, " if room.opens_at is not None else ""
    return (
        f"waiting room of {room.event_id}: {gate}{', paused' if room.paused else ''}; {opens}"
        f"sale opens {when(room.sale_opens_at)}; {room.rate_per_minute} fans a minute, "
        f"{duration(room.window_seconds)} each{shoppers}"
    )


def _move(settings: Settings, ref: str, verb: str, as_json: bool) -> None:
    from booking.ops import reads
    from booking.waiting_room import service as rooms

    move = rooms.pause_room if verb == "pause" else rooms.resume_room

    async def act(session: AsyncSession) -> RoomSettings:
        return await move(session, await reads.resolve_event(session, ref))

    async def work(session: AsyncSession) -> RoomSettings:
        return await audited(
            session,
            lambda: act(session),
            action=f"waiting_room.{verb}",
            target_type="event",
            target_id=ref,
            details=_room_facts,
        )

    room = with_session(settings, work, f"event {ref}")
    report(as_json, room, _summary(room))


@waiting_room_app.command("pause")
def waiting_room_pause(
    ctx: typer.Context, event: EventArgument, yes: YesOption = False, as_json: JsonOption = False
) -> None:
    """Stop admitting fans; the queue keeps its order and fans shopping keep their windows."""
    confirm(f"Pause admission to {event}? Fans keep their places but nobody new gets in", yes)
    _move(settings_of(ctx), event, "pause", as_json)


@waiting_room_app.command("resume")
def waiting_room_resume(ctx: typer.Context, event: EventArgument, as_json: JsonOption = False) -> None:
    """Admit fans again at the room's rate (no burst for the time paused)."""
    _move(settings_of(ctx), event, "resume", as_json)
