"""The virtual waiting room: staff settings, the fans' queue, admission, and the gate on holds.

What it promises (ARCHITECTURE.md, promise 7):

- Fairness. Every fan who joins before the sale opens gets a uniformly random place (drawn
  from ``secrets`` at joining, kept on a repeated join, hidden until the opening); everyone
  after queues in arrival order behind them. A place is kept while the fan checks it (joins,
  polls or streams) at least once per ``grace_seconds``; one left longer is dropped.
- Metering. From ``sale_opens_at``, unless paused, the admission tick (``tick``, every second
  in the worker daemon) admits ``rate_per_minute`` fans a minute, carrying fractions from tick
  to tick, never more than ``max_shoppers`` shopping at once. The credit is earned in one Redis
  script against the last tick's time, so ticks racing (two daemons) earn it once.
- Once. An admission is a row of ``waiting_room_admissions`` (unique per event and fan),
  committed before the fan can learn of it; the token is only ever made from that row and
  expires with its window. A fan who was admitted is answered with that admission whenever
  they come back, even after Redis lost the queue: never a second window.
- The gate. While a room is *active* (enabled, and its event's on-sale window has not ended;
  paused or not, opened to fans or not) a fan's hold and checkout on its event need the
  fan's valid token (``check_admission``), refused with one distinct error per reason.
  Whether a room is active is read from PostgreSQL (cached per process for about a second,
  ``RoomCache``), never from Redis, so events without a room keep selling when Redis is away;
  an active room's gate then fails closed (``WaitingRoomUnavailable``, a 503).

Time: every verb takes ``now`` (default: this machine's clock), so tests can run a sale's
hour in a second; the API hosts and daemons are assumed to keep time (NTP), as the daemons'
heartbeats already are. Verbs taking a session run in the caller's transaction and do not
commit; ``tick`` takes a session factory and commits its own, because Redis is told of an
admission only after PostgreSQL recorded it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import metrics
from booking.catalog.models import Event, EventStatus
from booking.errors import (
    AdmissionRequired,
    AdmissionRevoked,
    AdmissionTokenExpired,
    AdmissionTokenOtherEvent,
    AdmissionTokenOtherFan,
    EventNotFound,
    InvalidRequest,
    NotInQueue,
    RoomNotConfigured,
    RoomStateConflict,
    WaitingRoomNotActive,
    WaitingRoomNotOpen,
    WaitingRoomUnavailable,
)
from booking.holds.models import Hold
from booking.redis_client import Breaker
from booking.waiting_room import models as m
from booking.waiting_room import tokens
from booking.waiting_room.models import AdmissionRecord as AdmissionRow
from booking.waiting_room.models import WaitingRoom
from booking.waiting_room.queue import EARLY_BITS, RoomQueue, Spot, Taken

log = logging.getLogger("boxoffice.waiting_room")

# How long a process trusts its copy of the rooms' settings.
ROOM_CACHE_SECONDS = 1.0
# Fans are told to check their place this often (a quarter of the grace, within bounds).
MIN_POLL_SECONDS, MAX_POLL_SECONDS = 2, 15

# set_room's ``clear``: the settings that may be set back to none.
CLEARABLE = frozenset({"opens_at", "max_shoppers"})


# --- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomSettings:
    """One event's room. ``closes_at`` is the event's on-sale end, after which the room
    gates nothing (None only for a room read without its event)."""

    event_id: uuid.UUID
    enabled: bool
    opens_at: dt.datetime | None
    sale_opens_at: dt.datetime | None
    rate_per_minute: int
    window_seconds: int
    max_shoppers: int | None
    grace_seconds: int
    paused: bool
    closes_at: dt.datetime | None = None

    def active(self, now: dt.datetime) -> bool:
        """Whether the room gates holds and checkouts now: enabled, and before the event's
        on-sale end (paused, or not yet open to fans, it still gates)."""
        return self.enabled and (self.closes_at is None or now < self.closes_at)

    def joinable(self, now: dt.datetime) -> bool:
        return self.active(now) and (self.opens_at is None or now >= self.opens_at)

    def sale_open(self, now: dt.datetime) -> bool:
        return self.sale_opens_at is None or now >= self.sale_opens_at

    def admitting(self, now: dt.datetime) -> bool:
        return self.active(now) and self.sale_open(now) and not self.paused

    @property
    def poll_seconds(self) -> int:
        """How often a fan should check the place: well inside the grace."""
        return max(MIN_POLL_SECONDS, min(MAX_POLL_SECONDS, self.grace_seconds // 4))


def _settings(row: WaitingRoom, closes_at: dt.datetime | None) -> RoomSettings:
    return RoomSettings(
        event_id=row.event_id,
        enabled=row.enabled,
        opens_at=row.opens_at,
        sale_opens_at=row.sale_opens_at,
        rate_per_minute=row.rate_per_minute,
        window_seconds=row.window_seconds,
        max_shoppers=row.max_shoppers,
        grace_seconds=row.grace_seconds,
        paused=row.paused,
        closes_at=closes_at,
    )


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


async def get_room(session: AsyncSession, event_id: uuid.UUID) -> RoomSettings | None:
    """The event's room as staff set it, or None when it has none (or no such event)."""
    row = (
        await session.execute(
            select(WaitingRoom, Event.onsale_ends_at)
            .join(Event, Event.id == WaitingRoom.event_id)
            .where(WaitingRoom.event_id == event_id)
            .execution_options(populate_existing=True)
        )
    ).first()
    return _settings(row[0], row[1]) if row is not None else None


async def _event_window(session: AsyncSession, event_id: uuid.UUID) -> tuple[dt.datetime, dt.datetime]:
    """(on-sale start, on-sale end). Raises: EventNotFound."""
    row = (
        await session.execute(
            select(Event.onsale_starts_at, Event.onsale_ends_at).where(Event.id == event_id)
        )
    ).first()
    if row is None:
        raise EventNotFound(f"There is no event {event_id}.")
    return row[0], row[1]


def _check_time(name: str, value: dt.datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a timezone (add Z or +00:00).")


def _check_range(name: str, value: int | None, low: int, high: int, unit: str) -> None:
    if value is not None and not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high} {unit}.")


async def set_room(
    session: AsyncSession,
    event_id: uuid.UUID,
    *,
    enabled: bool | None = None,
    opens_at: dt.datetime | None = None,
    sale_opens_at: dt.datetime | None = None,
    rate_per_minute: int | None = None,
    window_seconds: int | None = None,
    max_shoppers: int | None = None,
    grace_seconds: int | None = None,
    clear: Collection[str] = (),
    now: dt.datetime | None = None,
) -> RoomSettings:
    """Set the event's room, creating it if it has none (then: disabled, admitting
    ``DEFAULT_RATE_PER_MINUTE`` fans a minute for ``DEFAULT_WINDOW_SECONDS`` each, a grace of
    ``DEFAULT_GRACE_SECONDS``, and the sale opening with the event's on-sale start). A value
    left None is left as it is; ``clear`` names settings to set back to none (``opens_at``:
    fans may join whenever the room is enabled; ``max_shoppers``: no limit).

    Raises:
        EventNotFound.
        InvalidRequest: a value out of its range (rate 1..100000 a minute, window 60..3600 s,
            grace 10..3600 s, max shoppers 1..1000000), a time without a timezone, fans
            allowed in after the sale opens, or ``clear`` naming another setting.
        RoomStateConflict: moving the opening of a sale that has opened, in an enabled room
            (it would reorder fans already drawn or queued).
    """
    now = _now(now)
    unknown = set(clear) - CLEARABLE
    if unknown:
        raise InvalidRequest(
            f"Only {', '.join(sorted(CLEARABLE))} can be cleared, not {', '.join(sorted(unknown))}."
        )
    _check_time("opens_at", opens_at)
    _check_time("sale_opens_at", sale_opens_at)
    _check_range(
        "rate_per_minute", rate_per_minute, m.MIN_RATE_PER_MINUTE, m.MAX_RATE_PER_MINUTE, "fans a minute"
    )
    _check_range("window_seconds", window_seconds, m.MIN_WINDOW_SECONDS, m.MAX_WINDOW_SECONDS, "seconds")
    _check_range("grace_seconds", grace_seconds, m.MIN_GRACE_SECONDS, m.MAX_GRACE_SECONDS, "seconds")
    _check_range("max_shoppers", max_shoppers, 1, m.MAX_SHOPPERS_LIMIT, "fans")
    onsale_starts, onsale_ends = await _event_window(session, event_id)
    await session.execute(
        insert(WaitingRoom).values(event_id=event_id, sale_opens_at=onsale_starts).on_conflict_do_nothing()
    )
    # Locked until the caller commits: two staff setting the room at once apply in turn.
    room = await session.scalar(
        select(WaitingRoom)
        .where(WaitingRoom.event_id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert room is not None
    if (
        sale_opens_at is not None
        and room.enabled
        and room.sale_opens_at is not None
        and room.sale_opens_at <= now
        and sale_opens_at != room.sale_opens_at
    ):
        raise RoomStateConflict(
            "The sale has opened and fans were placed by it; its opening cannot move now."
            " Pause the room to stop admission instead."
        )
    changes: dict[str, object] = {
        name: value
        for name, value in (
            ("enabled", enabled),
            ("opens_at", opens_at),
            ("sale_opens_at", sale_opens_at),
            ("rate_per_minute", rate_per_minute),
            ("window_seconds", window_seconds),
            ("max_shoppers", max_shoppers),
            ("grace_seconds", grace_seconds),
        )
        if value is not None
    }
    for name in clear:
        changes[name] = None
    after = replace(_settings(room, onsale_ends), **changes)  # type: ignore[arg-type]
    if (
        after.opens_at is not None
        and after.sale_opens_at is not None
        and after.opens_at > after.sale_opens_at
    ):
        raise InvalidRequest(
            "opens_at must not be after sale_opens_at: fans join the room before the sale opens."
        )
    for name, value in changes.items():
        setattr(room, name, value)
    room.updated_at = func.now()
    await session.flush()
    return after


async def _move(session: AsyncSession, event_id: uuid.UUID, paused: bool) -> RoomSettings:
    row = (
        await session.execute(
            update(WaitingRoom)
            .where(WaitingRoom.event_id == event_id, WaitingRoom.paused.is_(not paused))
            .values(paused=paused, updated_at=func.now())
            .returning(WaitingRoom.event_id)
        )
    ).first()
    room = await get_room(session, event_id)
    if room is None:
        await _event_window(session, event_id)
        raise RoomNotConfigured()
    if row is None:
        raise RoomStateConflict(f"The waiting room is already {'paused' if paused else 'admitting'}.")
    return room


async def pause_room(session: AsyncSession, event_id: uuid.UUID) -> RoomSettings:
    """Stop admitting fans: the queue stays, fans keep their places and may still join;
    fans already admitted keep their windows. One guarded statement: of two staff pausing at
    once, exactly one does.

    Raises:
        EventNotFound; RoomNotConfigured; RoomStateConflict (already paused).
    """
    return await _move(session, event_id, True)


async def resume_room(session: AsyncSession, event_id: uuid.UUID) -> RoomSettings:
    """Admit fans again at the room's rate (no burst for the time paused).

    Raises:
        EventNotFound; RoomNotConfigured; RoomStateConflict (not paused).
    """
    return await _move(session, event_id, False)


class RoomCache:
    """This process's copy of every enabled room of a published event whose on-sale window
    has not ended, read from PostgreSQL at most once per ``ttl`` seconds: what the gate on
    holds asks on every request, and what fans' polls ask, without a round trip.

    A change made by staff reaches every process within ``ttl``. While one request reads
    the rooms again, the others use the copy they have. One per event loop.
    """

    def __init__(self, ttl: float = ROOM_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._rooms: dict[uuid.UUID, RoomSettings] = {}
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._read_at is not None and self._clock() - self._read_at < self.ttl

    async def rooms(self, session: AsyncSession) -> Mapping[uuid.UUID, RoomSettings]:
        if self._fresh() or (self._lock.locked() and self._read_at is not None):
            return self._rooms
        async with self._lock:
            if not self._fresh():
                self._rooms = await enabled_rooms(session)
                self._read_at = self._clock()
        return self._rooms

    async def get(self, session: AsyncSession, event_id: uuid.UUID) -> RoomSettings | None:
        return (await self.rooms(session)).get(event_id)

    def forget(self) -> None:
        """Read the rooms again at the next ask (after this process changed one)."""
        self._read_at = None


async def enabled_rooms(session: AsyncSession) -> dict[uuid.UUID, RoomSettings]:
    """Every enabled room of a published event whose on-sale window has not ended, by event."""
    rows = await session.execute(
        select(WaitingRoom, Event.onsale_ends_at)
        .join(Event, Event.id == WaitingRoom.event_id)
        .where(WaitingRoom.enabled, Event.onsale_ends_at > func.now(), Event.status != EventStatus.DRAFT)
        .execution_options(populate_existing=True)
    )
    return {room.event_id: _settings(room, closes) for room, closes in rows}


# --- what a fan sees ---------------------------------------------------------------------


class PlaceState(enum.StrEnum):
    # Joined before the sale opened: the place is drawn at the opening.
    WAITING = "waiting"
    QUEUED = "queued"
    # Let through: the admission token is good until the window ends.
    ADMITTED = "admitted"
    # The admission was used up: its window ended or the fan gave it up.
    ENDED = "ended"
    # Left the queue before being admitted (may join again, at the back).
    LEFT = "left"


@dataclass(frozen=True)
class Admission:
    """A fan's admission to an event, as recorded. ``token`` is None once it has ended."""

    event_id: uuid.UUID
    fan_id: uuid.UUID
    window_ends_at: dt.datetime
    ended_at: dt.datetime | None
    token: str | None


@dataclass(frozen=True)
class Place:
    """Where a fan stands. ``position`` (1 is next) and ``fans_ahead`` are known once the
    sale has opened; ``estimated_wait_seconds`` divides the fans ahead by ``rate_per_minute``:
    the rate measured over the last minute (``rate_measured``), or the room's setting before
    there is a measurement; None while paused."""

    event_id: uuid.UUID
    fan_id: uuid.UUID
    state: PlaceState
    room: RoomSettings
    position: int | None = None
    fans_ahead: int | None = None
    estimated_wait_seconds: float | None = None
    rate_per_minute: float | None = None
    rate_measured: bool = False
    admission: Admission | None = None


def admission_token(
    signing_key: Ed25519PrivateKey, event_id: uuid.UUID, fan_id: uuid.UUID, ends: dt.datetime
) -> str:
    """The token of the admission of ``fan_id`` to ``event_id`` whose window ends at ``ends``."""
    return tokens.sign(signing_key, event_id=event_id, fan_id=fan_id, expires_at=ends)


def _admission(
    signing_key: Ed25519PrivateKey,
    event_id: uuid.UUID,
    fan_id: uuid.UUID,
    ends: dt.datetime,
    ended_at: dt.datetime | None,
    now: dt.datetime,
) -> Admission:
    live = ended_at is None and ends > now
    token = admission_token(signing_key, event_id, fan_id, ends) if live else None
    return Admission(event_id, fan_id, ends, ended_at, token)


def _admitted(room: RoomSettings, fan_id: uuid.UUID, admission: Admission) -> Place:
    state = PlaceState.ADMITTED if admission.token is not None else PlaceState.ENDED
    return Place(room.event_id, fan_id, state, room, admission=admission)


async def _recorded(session: AsyncSession, event_id: uuid.UUID, fan_id: uuid.UUID) -> AdmissionRow | None:
    return await session.scalar(
        select(AdmissionRow)
        .where(AdmissionRow.event_id == event_id, AdmissionRow.fan_id == fan_id)
        .execution_options(populate_existing=True)
    )


@contextlib.contextmanager
def _redis(breaker: Breaker | None) -> Iterator[None]:
    """Around the Redis steps of a fan's request: skipped at once while ``breaker`` says
    Redis is away, and either way answered as the room being unavailable (503)."""
    if breaker is not None and not breaker.allows():
        raise WaitingRoomUnavailable()
    try:
        yield
    except RedisError as error:
        if breaker is not None:
            breaker.failed()
        log.warning("waiting room unavailable, Redis unreachable: %s", error)
        raise WaitingRoomUnavailable() from None
    if breaker is not None:
        breaker.succeeded()


async def _fan_room(
    session: AsyncSession, event_id: uuid.UUID, rooms: RoomCache | None, now: dt.datetime
) -> RoomSettings:
    """Raises: EventNotFound; WaitingRoomNotActive."""
    room = await rooms.get(session, event_id) if rooms is not None else await get_room(session, event_id)
    if room is None or not room.active(now):
        status = await session.scalar(select(Event.status).where(Event.id == event_id))
        if status is None or status == EventStatus.DRAFT:
            raise EventNotFound(f"There is no event {event_id}.")
        raise WaitingRoomNotActive()
    return room


def _rate(room: RoomSettings, measured: float | None) -> tuple[float, bool]:
    if measured is not None and measured > 0:
        return measured, True
    return float(room.rate_per_minute), False


async def _place(
    session: AsyncSession,
    room: RoomSettings,
    fan_id: uuid.UUID,
    spot: Spot,
    signing_key: Ed25519PrivateKey,
    now: dt.datetime,
) -> Place:
    """The fan's place from what Redis said, PostgreSQL deciding whatever Redis does not know.

    Raises: NotInQueue."""
    if spot.state == "admitted" and spot.window_ends_ms is not None:
        ends = tokens.from_ms(spot.window_ends_ms)
        return _admitted(room, fan_id, _admission(signing_key, room.event_id, fan_id, ends, None, now))
    if spot.state in ("admitting", "none", "lapsed"):
        # Being recorded this very moment, or unknown to Redis (which may have lost it): the
        # record says whether the fan was admitted.
        row = await _recorded(session, room.event_id, fan_id)
        if row is not None:
            admission = _admission(signing_key, room.event_id, fan_id, row.window_ends_at, row.ended_at, now)
            return _admitted(room, fan_id, admission)
        if spot.state == "lapsed":
            metrics.WAITING_ROOM_LAPSED.inc()
        if spot.state != "admitting":
            raise NotInQueue(room.grace_seconds)
        spot = Spot("queued", rank=0, depth=None)
    if not room.sale_open(now):
        return Place(room.event_id, fan_id, PlaceState.WAITING, room)
    ahead = spot.rank or 0
    rate, measured = _rate(room, spot.measured_per_minute)
    wait = None if room.paused else round((ahead + 1) * 60 / rate, 1)
    return Place(
        room.event_id,
        fan_id,
        PlaceState.QUEUED,
        room,
        position=ahead + 1,
        fans_ahead=ahead,
        estimated_wait_seconds=wait,
        rate_per_minute=round(rate, 1),
        rate_measured=measured,
    )


async def join(
    session: AsyncSession,
    redis: Redis,
    event_id: uuid.UUID,
    fan_id: uuid.UUID,
    *,
    signing_key: Ed25519PrivateKey,
    rooms: RoomCache | None = None,
    breaker: Breaker | None = None,
    now: dt.datetime | None = None,
    rng: Callable[[int], int] = secrets.randbits,
) -> Place:
    """Give the fan a place in the event's queue, or tell them the one they have (joining
    again changes nothing, and a fan admitted before gets that admission). Before the sale
    opens the place is drawn with ``rng`` (52 random bits; keep the default, a secure RNG,
    outside tests), after it the fan joins at the back.

    Raises:
        EventNotFound; WaitingRoomNotActive; WaitingRoomNotOpen (before ``opens_at``);
        WaitingRoomUnavailable (Redis unreachable).
    """
    now = _now(now)
    room = await _fan_room(session, event_id, rooms, now)
    if not room.joinable(now):
        assert room.opens_at is not None
        raise WaitingRoomNotOpen(room.opens_at.isoformat())
    row = await _recorded(session, event_id, fan_id)
    if row is not None:
        return _admitted(
            room, fan_id, _admission(signing_key, event_id, fan_id, row.window_ends_at, row.ended_at, now)
        )
    queue = RoomQueue(redis, event_id)
    with _redis(breaker):
        spot = await queue.join(
            fan_id,
            tokens.to_ms(now),
            early=not room.sale_open(now),
            drawn=rng(EARLY_BITS),
            grace_ms=room.grace_seconds * 1000,
        )
    if spot.joined:
        metrics.WAITING_ROOM_JOINS.inc()
    return await _place(session, room, fan_id, spot, signing_key, now)


async def position(
    session: AsyncSession,
    redis: Redis,
    event_id: uuid.UUID,
    fan_id: uuid.UUID,
    *,
    signing_key: Ed25519PrivateKey,
    rooms: RoomCache | None = None,
    breaker: Breaker | None = None,
    now: dt.datetime | None = None,
) -> Place:
    """Where the fan stands now, and their token once admitted. Asking keeps the place for
    another ``grace_seconds``; a fan who asks after longer has lost it.

    Needs no database round trip for a fan Redis knows (with ``rooms``).

    Raises:
        EventNotFound; WaitingRoomNotActive; NotInQueue (never joined, left, or the place
        lapsed); WaitingRoomUnavailable.
    """
    now = _now(now)
    room = await _fan_room(session, event_id, rooms, now)
    with _redis(breaker):
        spot = await RoomQueue(redis, event_id).poll(
            fan_id, tokens.to_ms(now), grace_ms=room.grace_seconds * 1000
        )
    return await _place(session, room, fan_id, spot, signing_key, now)


async def leave(
    session: AsyncSession,
    redis: Redis,
    event_id: uuid.UUID,
    fan_id: uuid.UUID,
    *,
    rooms: RoomCache | None = None,
    breaker: Breaker | None = None,
    now: dt.datetime | None = None,
) -> Place:
    """Leave the queue (``LEFT``: joining again queues at the back), or end one's shopping
    window early (``ENDED``: the token is refused from now on, and the room has space for
    the next fan). Admitted fans cannot be admitted again.

    Raises:
        EventNotFound; WaitingRoomNotActive; NotInQueue (nothing to leave);
        WaitingRoomUnavailable.
    """
    now = _now(now)
    room = await _fan_room(session, event_id, rooms, now)
    # The record first: once Redis no longer shows the fan shopping, the gate asks it.
    ended = (
        await session.execute(
            update(AdmissionRow)
            .where(
                AdmissionRow.event_id == event_id,
                AdmissionRow.fan_id == fan_id,
                AdmissionRow.ended_at.is_(None),
                AdmissionRow.window_ends_at > now,
            )
            .values(ended_at=now)
            .returning(AdmissionRow.window_ends_at)
        )
    ).first()
    with _redis(breaker):
        was = await RoomQueue(redis, event_id).leave(fan_id)
    if ended is not None:
        return _admitted(room, fan_id, Admission(event_id, fan_id, ended[0], now, None))
    if was == "queued":
        return Place(event_id, fan_id, PlaceState.LEFT, room)
    row = await _recorded(session, event_id, fan_id)
    if row is not None:
        return _admitted(room, fan_id, Admission(event_id, fan_id, row.window_ends_at, row.ended_at, None))
    raise NotInQueue(room.grace_seconds)


# --- the gate ------------------------------------------------------------------------------


async def hold_event(session: AsyncSession, hold_id: uuid.UUID, fan_id: uuid.UUID) -> uuid.UUID | None:
    """The event of the fan's hold, or None when the fan has no such hold."""
    return await session.scalar(select(Hold.event_id).where(Hold.id == hold_id, Hold.fan_id == fan_id))


async def check_admission(
    session: AsyncSession,
    redis: Redis,
    *,
    event_id: uuid.UUID,
    fan_id: uuid.UUID,
    token: str | None,
    verifying_keys: Iterable[Ed25519PublicKey],
    rooms: RoomCache | None = None,
    breaker: Breaker | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Let a fan's hold or checkout on ``event_id`` through, or refuse it. Returns whether
    the event's room is active (False: nothing was checked; no token is needed).

    Costs, for an event with an active room: a signature check and one Redis round trip;
    PostgreSQL is asked only when Redis does not show the fan shopping (it may have lost
    that). With ``rooms``, an event without one costs nothing.

    Raises:
        AdmissionRequired (no token); AdmissionTokenInvalid (malformed, forged, another
        key's, or not an admission token at all); AdmissionTokenOtherFan;
        AdmissionTokenOtherEvent; AdmissionTokenExpired (its window has ended);
        AdmissionRevoked (the fan gave the admission up, or it is not on record);
        WaitingRoomUnavailable (Redis unreachable: the room fails closed).
    """
    now = _now(now)
    room = await rooms.get(session, event_id) if rooms is not None else await get_room(session, event_id)
    if room is None or not room.active(now):
        return False
    if token is None:
        raise AdmissionRequired()
    claims = tokens.verify(token, verifying_keys)
    if claims.fan_id != fan_id:
        raise AdmissionTokenOtherFan()
    if claims.event_id != event_id:
        raise AdmissionTokenOtherEvent()
    if claims.expires_at <= now:
        raise AdmissionTokenExpired(f"Your shopping window ended at {claims.expires_at.isoformat()}.")
    with _redis(breaker):
        shopping_until = await RoomQueue(redis, event_id).shopping_until(fan_id)
    if shopping_until == tokens.to_ms(claims.expires_at):
        return True
    row = await _recorded(session, event_id, fan_id)
    if (
        row is None
        or row.ended_at is not None
        or tokens.to_ms(row.window_ends_at) != tokens.to_ms(claims.expires_at)
    ):
        raise AdmissionRevoked()
    return True


# --- the admission tick ------------------------------------------------------------------


@dataclass(frozen=True)
class TickResult:
    """What one tick did in one room: the fans it admitted (recorded now), the places it
    dropped (lapsed), and how many still wait."""

    event_id: uuid.UUID
    admitted: tuple[uuid.UUID, ...] = ()
    dropped: int = 0
    depth: int = 0


async def _live_admissions(
    session: AsyncSession, event_id: uuid.UUID, now: dt.datetime
) -> list[tuple[uuid.UUID, int]]:
    rows = await session.execute(
        select(AdmissionRow.fan_id, AdmissionRow.window_ends_at).where(
            AdmissionRow.event_id == event_id,
            AdmissionRow.ended_at.is_(None),
            AdmissionRow.window_ends_at > now,
        )
    )
    return [(fan_id, tokens.to_ms(ends)) for fan_id, ends in rows]


async def _record(
    sessions: async_sessionmaker[AsyncSession],
    room: RoomSettings,
    pending: tuple[tuple[uuid.UUID, int], ...],
    now: dt.datetime,
) -> tuple[list[uuid.UUID], list[tuple[uuid.UUID, int, bool]]]:
    """Record the admissions of ``pending`` (fan, window end); a fan admitted before keeps
    that admission. Returns the fans admitted now, and every pending fan's admission as
    recorded (fan, window end, still live), for Redis."""
    fresh_ends = now + dt.timedelta(seconds=room.window_seconds)
    values = []
    for fan_id, ends_ms in pending:
        ends = tokens.from_ms(ends_ms)
        # A fan a dead tick took long ago never learnt of it: a whole window from now.
        values.append(
            {
                "event_id": room.event_id,
                "fan_id": fan_id,
                "admitted_at": now,
                "window_ends_at": ends if ends > now else fresh_ends,
            }
        )
    async with sessions() as session:
        inserted = (
            await session.scalars(
                insert(AdmissionRow).values(values).on_conflict_do_nothing().returning(AdmissionRow.fan_id)
            )
        ).all()
        rows = (
            await session.execute(
                select(AdmissionRow.fan_id, AdmissionRow.window_ends_at, AdmissionRow.ended_at).where(
                    AdmissionRow.event_id == room.event_id,
                    AdmissionRow.fan_id.in_([fan_id for fan_id, _ in pending]),
                )
            )
        ).all()
        await session.commit()
    recorded = [(fan_id, tokens.to_ms(ends), ended is None and ends > now) for fan_id, ends, ended in rows]
    return list(inserted), recorded


async def _take(queue: RoomQueue, room: RoomSettings, now: dt.datetime) -> Taken:
    return await queue.take(
        tokens.to_ms(now),
        admit=room.admitting(now),
        opened_ms=tokens.to_ms(room.sale_opens_at) if room.sale_opens_at is not None else 0,
        rate_per_minute=room.rate_per_minute,
        max_shoppers=room.max_shoppers,
        window_ms=room.window_seconds * 1000,
        grace_ms=room.grace_seconds * 1000,
    )


async def tick(
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    event_id: uuid.UUID,
    *,
    now: dt.datetime | None = None,
) -> TickResult:
    """One admission step of the event's room at ``now``: drop the places that lapsed; if the
    sale is open and the room not paused, admit the fans the credit earned since the last
    tick allows (``max_shoppers`` permitting), recording each admission before Redis shows
    it. Idempotent: a repeat at the same ``now`` earns nothing and admits no one; whatever a
    tick that died left half done is finished by the next.

    Raises: redis.exceptions.RedisError, sqlalchemy errors (the next tick tries again).
    """
    now = _now(now)
    async with sessions() as session:
        room = await get_room(session, event_id)
    if room is None or not room.active(now):
        return TickResult(event_id)
    queue = RoomQueue(redis, event_id)
    taken = await _take(queue, room, now)
    if taken.needs_load:
        # Redis lost the room (or never had it): the shoppers still inside count again.
        async with sessions() as session:
            await queue.load(await _live_admissions(session, event_id, now))
        taken = await _take(queue, room, now)
    admitted: list[uuid.UUID] = []
    if taken.pending:
        inserted, recorded = await _record(sessions, room, taken.pending, now)
        await queue.settle(recorded)
        # In queue order: those this tick took, then any an earlier tick had left.
        order = {fan_id: n for n, fan_id in enumerate(taken.taken)}
        admitted = sorted(inserted, key=lambda fan_id: order.get(fan_id, len(order)))
        metrics.WAITING_ROOM_ADMISSIONS.inc(len(admitted))
    if taken.dropped:
        metrics.WAITING_ROOM_LAPSED.inc(taken.dropped)
    metrics.WAITING_ROOM_WAITING.labels(str(event_id)).set(taken.depth)
    return TickResult(event_id, tuple(admitted), taken.dropped, taken.depth)


async def tick_rooms(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, *, now: dt.datetime | None = None
) -> list[TickResult]:
    """``tick`` every active room, in turn.

    Raises: as ``tick`` (the rooms after a failing one wait for the next tick)."""
    now = _now(now)
    async with sessions() as session:
        ids = list(await enabled_rooms(session))
    return [await tick(sessions, redis, event_id, now=now) for event_id in ids]


# --- what staff see ------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomStatus:
    """A room's settings and how it is doing. ``depth``: fans waiting (Redis);
    ``shopping``: admitted fans whose window has not ended; ``admitted_total``: every fan
    ever admitted (both from PostgreSQL, so right while Redis is away);
    ``eta_seconds_for_last``: when the last fan waiting now should be admitted (from the
    sale's opening, if it has not opened; None while paused). With ``redis_ok`` False,
    ``depth`` is 0 and there is no measured rate."""

    settings: RoomSettings
    depth: int
    shopping: int
    admitted_total: int
    measured_rate_per_minute: float | None
    eta_seconds_for_last: float | None
    redis_ok: bool


async def _admission_counts(
    session: AsyncSession, event_ids: Collection[uuid.UUID], now: dt.datetime
) -> dict[uuid.UUID, tuple[int, int]]:
    if not event_ids:
        return {}
    rows = await session.execute(
        select(
            AdmissionRow.event_id,
            func.count(),
            func.count().filter(AdmissionRow.ended_at.is_(None), AdmissionRow.window_ends_at > now),
        )
        .where(AdmissionRow.event_id.in_(list(event_ids)))
        .group_by(AdmissionRow.event_id)
    )
    return {event_id: (int(total), int(live)) for event_id, total, live in rows}


async def _status(
    redis: Redis, room: RoomSettings, counts: tuple[int, int], now: dt.datetime, breaker: Breaker | None
) -> RoomStatus:
    total, live = counts
    depth, measured, ok = 0, None, False
    if breaker is None or breaker.allows():
        try:
            found = await RoomQueue(redis, room.event_id).counts(tokens.to_ms(now))
            depth, measured, ok = found.depth, found.measured_per_minute, True
            if breaker is not None:
                breaker.succeeded()
        except RedisError as error:
            log.warning("waiting room %s: Redis unreachable for its status: %s", room.event_id, error)
            if breaker is not None:
                breaker.failed()
    eta = None
    if not room.paused:
        rate, _ = _rate(room, measured)
        eta = depth * 60 / rate
        if room.sale_opens_at is not None and room.sale_opens_at > now:
            eta += (room.sale_opens_at - now).total_seconds()
        eta = round(eta, 1)
    return RoomStatus(room, depth, live, total, measured, eta, ok)


async def room_status(
    session: AsyncSession,
    redis: Redis,
    event_id: uuid.UUID,
    *,
    breaker: Breaker | None = None,
    now: dt.datetime | None = None,
) -> RoomStatus:
    """The event's room and how it is doing now. Redis errors are reported, not raised (with
    ``breaker``, Redis is not even asked while it is known to be away).

    Raises: EventNotFound; RoomNotConfigured."""
    now = _now(now)
    room = await get_room(session, event_id)
    if room is None:
        await _event_window(session, event_id)
        raise RoomNotConfigured()
    counts = await _admission_counts(session, [event_id], now)
    return await _status(redis, room, counts.get(event_id, (0, 0)), now, breaker)


async def rooms_status(
    session: AsyncSession, redis: Redis, *, breaker: Breaker | None = None, now: dt.datetime | None = None
) -> list[RoomStatus]:
    """Every enabled room of an event that has not ended, in the order the events start.
    Never raises for Redis: a room it could not read says ``redis_ok`` False."""
    now = _now(now)
    rows = (
        await session.execute(
            select(WaitingRoom, Event.onsale_ends_at)
            .join(Event, Event.id == WaitingRoom.event_id)
            .where(WaitingRoom.enabled, Event.ends_at > now)
            .order_by(Event.starts_at, Event.id)
            .execution_options(populate_existing=True)
        )
    ).all()
    rooms = [_settings(room, closes) for room, closes in rows]
    counts = await _admission_counts(session, [room.event_id for room in rooms], now)
    return [await _status(redis, room, counts.get(room.event_id, (0, 0)), now, breaker) for room in rooms]
