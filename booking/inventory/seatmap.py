"""What fans see of an event's inventory: the seat map and the remaining counts.

Two reads, two promises:

- ``availability``: places left per price tier, counted by PostgreSQL with the claim guard: a
  seat counts as left exactly when a claim would take it. (The API serves the count from a
  cache at most a second old.)
- the seat map: one entry per seat (20,000 in a stadium), too large to build per request. It
  is served by ``SeatmapCache`` from a snapshot in Redis, rebuilt from PostgreSQL only when
  the event's seat-map version has moved past the snapshot's, when a hold shown in it has
  reached its deadline, or when it is ``MAX_AGE_SECONDS`` old (so a change shows within about
  a second even with no worker relaying versions). It never decides who may buy a seat.

A seat is ``available`` on the map when the claim guard (``transitions.claimable``) says so at
the snapshot's time: a held seat past its deadline is available, with or without the expiry
job having run. The map never says who holds a seat or why one is unavailable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import gzip
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis
from sqlalchemy import func, not_, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.models import Event, EventStatus, GAArea, PriceTier, Seat, SeatRow, Section
from booking.errors import EventNotFound
from booking.inventory.models import InventoryUnit as U
from booking.inventory.models import UnitState
from booking.inventory.transitions import claimable

# Unpublished events do not exist for fans.
HIDDEN_STATUSES = frozenset({EventStatus.DRAFT})

# A rebuild of a stadium takes tens of milliseconds; the lock outlives any healthy one.
LOCK_SECONDS = 10
# At most one rebuild per event per this interval, across every API process: during an
# on-sale the version moves many times a second, and the map is allowed to lag.
MIN_REBUILD_SECONDS = 0.5
# A snapshot older than this is rebuilt even if no version bump reached Redis (the worker
# that relays them may be stopped); rebuilds stay bounded by MIN_REBUILD_SECONDS.
MAX_AGE_SECONDS = 1.0
# How long a request with no snapshot to fall back on waits for another one's rebuild.
WAIT_SECONDS = 3.0
POLL_SECONDS = 0.02
# Snapshots of events nobody looks at any more leave Redis on their own.
SNAPSHOT_TTL_SECONDS = 24 * 3600
# Layouts and prices change rarely and emit no unit change; an edit shows within this time,
# or at once after ``SeatmapCache.invalidate``.
LAYOUT_TTL_SECONDS = 600


# --- the static layout and the live state, as read from PostgreSQL --------------------------


class TierInfo(msgspec.Struct, frozen=True, array_like=True):
    id: uuid.UUID
    name: str
    price_minor: int
    currency: str
    ga_area_id: uuid.UUID | None


class SeatInfo(msgspec.Struct, frozen=True, array_like=True):
    id: int
    number: str
    x: float
    y: float
    accessible: bool
    tier_id: uuid.UUID


class RowInfo(msgspec.Struct, frozen=True, array_like=True):
    id: uuid.UUID
    label: str
    seats: list[SeatInfo]


class SectionInfo(msgspec.Struct, frozen=True, array_like=True):
    id: uuid.UUID
    name: str
    rows: list[RowInfo]


class GAAreaInfo(msgspec.Struct, frozen=True, array_like=True):
    id: uuid.UUID
    name: str
    # The tiers that sell places of this area, in the event's tier order.
    tier_ids: list[uuid.UUID]


class Layout(msgspec.Struct, frozen=True, array_like=True):
    """Everything on the map that no sale changes: only seats and areas that have inventory
    for this event appear (a seat without a unit has no tier and cannot be bought)."""

    event_id: uuid.UUID
    tiers: list[TierInfo]
    sections: list[SectionInfo]
    ga_areas: list[GAAreaInfo]


@dataclass(frozen=True)
class SeatStates:
    """The sale state at ``as_of`` (the database clock).

    ``taken``: seats a claim would not take now (held before their deadline, sold, blocked).
    ``ga_remaining``: claimable places per (GA area, tier). ``next_change``: the earliest
    deadline among the live holds counted as taken, when one of them turns available without
    any write.
    """

    as_of: dt.datetime
    taken: frozenset[int]
    ga_remaining: dict[tuple[uuid.UUID, uuid.UUID], int]
    next_change: dt.datetime | None


async def _check_event(session: AsyncSession, event_id: uuid.UUID) -> None:
    status = await session.scalar(select(Event.status).where(Event.id == event_id))
    if status is None or status in HIDDEN_STATUSES:
        raise EventNotFound()


async def load_layout(session: AsyncSession, event_id: uuid.UUID) -> Layout:
    """The event's seats (by section and row), GA areas and tiers with prices.

    Raises:
        EventNotFound: no such event, or it is not published.
    """
    await _check_event(session, event_id)
    tiers = [
        TierInfo(t.id, t.name, t.price_minor, t.currency, t.ga_area_id)
        for t in (
            await session.scalars(
                select(PriceTier)
                .where(PriceTier.event_id == event_id)
                .order_by(PriceTier.sort_order, PriceTier.name)
            )
        ).all()
    ]
    seat_rows = await session.execute(
        select(
            Section.id,
            Section.name,
            SeatRow.id,
            SeatRow.label,
            Seat.id,
            Seat.number,
            Seat.x,
            Seat.y,
            Seat.accessible,
            U.price_tier_id,
        )
        .select_from(U)
        .join(Seat, Seat.id == U.seat_id)
        .join(SeatRow, SeatRow.id == Seat.row_id)
        .join(Section, Section.id == SeatRow.section_id)
        .where(U.event_id == event_id)
        .order_by(Section.sort_order, Section.name, SeatRow.sort_order, SeatRow.label, Seat.id)
    )
    sections: list[SectionInfo] = []
    rows: dict[uuid.UUID, RowInfo] = {}
    for section_id, section_name, row_id, label, seat_id, number, x, y, accessible, tier_id in seat_rows:
        if not sections or sections[-1].id != section_id:
            sections.append(SectionInfo(section_id, section_name, []))
        row = rows.get(row_id)
        if row is None:
            row = rows[row_id] = RowInfo(row_id, label, [])
            sections[-1].rows.append(row)
        row.seats.append(SeatInfo(seat_id, number, x, y, accessible, tier_id))

    tier_order = {tier.id: n for n, tier in enumerate(tiers)}
    areas: dict[uuid.UUID, GAAreaInfo] = {}
    for area_id, name, tier_id in (
        await session.execute(
            select(GAArea.id, GAArea.name, U.price_tier_id)
            .select_from(U)
            .join(GAArea, GAArea.id == U.ga_area_id)
            .where(U.event_id == event_id)
            .group_by(GAArea.id, GAArea.name, U.price_tier_id)
            .order_by(GAArea.name)
        )
    ).all():
        areas.setdefault(area_id, GAAreaInfo(area_id, name, [])).tier_ids.append(tier_id)
    for area in areas.values():
        area.tier_ids.sort(key=lambda tier: tier_order.get(tier, len(tier_order)))
    return Layout(event_id, tiers, sections, list(areas.values()))


async def load_states(session: AsyncSession, event_id: uuid.UUID) -> SeatStates:
    """Which seats are taken and how many GA places are left, judged by the claim guard.

    Three short statements: the clock, the taken seats (usually far fewer than the free
    ones), the GA counts. ``now()`` is fixed for the transaction, so all three share it.
    """
    as_of: dt.datetime = (await session.execute(select(func.now()))).scalar_one()
    live_hold = (U.state == UnitState.HELD) & (U.held_until >= func.now())
    taken_rows = (
        await session.execute(
            select(U.seat_id, U.held_until).where(
                U.event_id == event_id, U.seat_id.is_not(None), not_(claimable())
            )
        )
    ).all()
    deadlines = [held_until for _, held_until in taken_rows if held_until is not None]
    ga_rows = (
        await session.execute(
            select(
                U.ga_area_id,
                U.price_tier_id,
                func.count().filter(claimable()),
                func.min(U.held_until).filter(live_hold),
            )
            .where(U.event_id == event_id, U.ga_area_id.is_not(None))
            .group_by(U.ga_area_id, U.price_tier_id)
        )
    ).all()
    deadlines += [deadline for *_, deadline in ga_rows if deadline is not None]
    return SeatStates(
        as_of=as_of,
        taken=frozenset(seat_id for seat_id, _ in taken_rows if seat_id is not None),
        ga_remaining={(area, tier): remaining for area, tier, remaining, _ in ga_rows if area is not None},
        next_change=min(deadlines, default=None),
    )


# --- availability: live counts, never cached -------------------------------------------------


class TierKind(enum.StrEnum):
    SEATED = "seated"
    GA = "ga"


@dataclass(frozen=True)
class TierAvailability:
    tier_id: uuid.UUID
    name: str
    kind: TierKind
    ga_area_id: uuid.UUID | None
    price_minor: int
    currency: str
    remaining: int


@dataclass(frozen=True)
class Availability:
    event_id: uuid.UUID
    as_of: dt.datetime
    tiers: list[TierAvailability]


async def availability(session: AsyncSession, event_id: uuid.UUID) -> Availability:
    """Places a claim could take right now, per tier, in one statement.

    The count uses the claim guard itself over ``ix_inventory_units_claim`` (event, tier,
    state), so it agrees with what a hold would get at that instant.

    Raises:
        EventNotFound: no such event, or it is not published.
    """
    counts = (
        select(U.price_tier_id, func.count().label("remaining"))
        .where(U.event_id == event_id, claimable())
        .group_by(U.price_tier_id)
        .subquery()
    )
    rows = (
        await session.execute(
            select(
                Event.status,
                func.now(),
                PriceTier.id,
                PriceTier.name,
                PriceTier.ga_area_id,
                PriceTier.price_minor,
                PriceTier.currency,
                func.coalesce(counts.c.remaining, 0),
            )
            .select_from(Event)
            .outerjoin(PriceTier, PriceTier.event_id == Event.id)
            .outerjoin(counts, counts.c.price_tier_id == PriceTier.id)
            .where(Event.id == event_id)
            .order_by(PriceTier.sort_order, PriceTier.name)
        )
    ).all()
    if not rows or rows[0][0] in HIDDEN_STATUSES:
        raise EventNotFound()
    return Availability(
        event_id=event_id,
        as_of=rows[0][1],
        tiers=[
            TierAvailability(
                tier_id=tier_id,
                name=name,
                kind=TierKind.GA if area_id is not None else TierKind.SEATED,
                ga_area_id=area_id,
                price_minor=price,
                currency=currency,
                remaining=remaining,
            )
            for _, _, tier_id, name, area_id, price, currency, remaining in rows
            if tier_id is not None
        ],
    )


# --- the seat-map cache ------------------------------------------------------------------------


def _prefix(event_id: uuid.UUID | str) -> str:
    # The {event_id} hash tag keeps an event's keys in one Redis Cluster slot, so one MGET
    # (or MULTI) can span them.
    return f"boxoffice:event:{{{event_id}}}"


def version_key(event_id: uuid.UUID | str) -> str:
    """The per-event counter the outbox consumer bumps on every ``units.changed``.

    The same key as ``jobs.outbox.seatmap_version_key``; the core may not import jobs, so a
    test holds the two spellings together."""
    return f"{_prefix(event_id)}:seatmap-version"


def _meta_key(event_id: uuid.UUID) -> str:
    return f"{_prefix(event_id)}:seatmap:meta"


def _body_key(event_id: uuid.UUID, gzipped: bool) -> str:
    return f"{_prefix(event_id)}:seatmap:{'gzip' if gzipped else 'json'}"


def _layout_key(event_id: uuid.UUID) -> str:
    return f"{_prefix(event_id)}:seatmap:layout"


def _lock_key(event_id: uuid.UUID) -> str:
    return f"{_prefix(event_id)}:seatmap:lock"


def cached_keys(event_id: uuid.UUID) -> list[str]:
    """What ``SeatmapCache.invalidate`` forgets: the layout and the snapshot. The outbox
    relay deletes them (and moves the version) on ``seatmap.changed``."""
    return [_layout_key(event_id), _meta_key(event_id), _body_key(event_id, True), _body_key(event_id, False)]


class SnapshotMeta(msgspec.Struct, frozen=True):
    """What a stored snapshot is: the version it reflects at least, its ETag, the wall time
    after which a hold it shows as taken has reached its deadline (None: no such hold), and
    the wall time it was built at."""

    version: int
    etag: str
    fresh_until: float | None = None
    built_at: float = 0.0

    def serves(self, current_version: int, now: float) -> bool:
        return (
            self.version >= current_version
            and (self.fresh_until is None or now < self.fresh_until)
            and now - self.built_at < MAX_AGE_SECONDS
        )


@dataclass(frozen=True)
class Snapshot:
    """A seat map ready to send. ``body`` is None when the caller's ETag is current (304);
    otherwise JSON bytes, gzip-compressed when ``gzipped``."""

    version: int
    etag: str
    body: bytes | None
    gzipped: bool


# Renders the layout and state at a version into the JSON body the client receives.
Render = Callable[[Layout, SeatStates, int], bytes]

_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[2]) > 0 then return redis.call('pexpire', KEYS[1], ARGV[2]) end
  return redis.call('del', KEYS[1])
end
return 0
"""


def _as_bytes(value: bytes | str | None) -> bytes | None:
    # A client made with decode_responses=True hands back str; the cache stores bytes.
    return value.encode() if isinstance(value, str) else value


def etag_matches(if_none_match: Collection[str], etag: str) -> bool:
    """RFC 9110 weak comparison: ``*`` or any listed tag equal to ``etag`` ignoring W/."""
    bare = etag.removeprefix("W/")
    return any(tag == "*" or tag.removeprefix("W/") == bare for tag in if_none_match)


def _encode(render: Render, layout: Layout, states: SeatStates, version: int) -> tuple[bytes, bytes, str]:
    body = render(layout, states, version)
    # mtime=0: the same body always compresses to the same bytes.
    compressed = gzip.compress(body, 6, mtime=0)
    return body, compressed, f'W/"{version}-{hashlib.blake2b(body, digest_size=8).hexdigest()}"'


async def _build(
    render: Render, layout: Layout, states: SeatStates, version: int
) -> tuple[SnapshotMeta, bytes, bytes]:
    """A snapshot of ``states`` at ``version``: its meta, the JSON body and the gzipped one."""
    # Rendering and compressing a stadium takes tens of milliseconds; in a thread, the
    # event loop keeps serving other requests meanwhile (zlib also releases the GIL).
    body, compressed, etag = await asyncio.to_thread(_encode, render, layout, states, version)
    fresh_until = None
    if states.next_change is not None:
        # A deadline in the database's time, turned into this machine's wall time by its
        # distance from the snapshot's own database time, so clock skew between the
        # servers does not matter.
        fresh_until = time.time() + (states.next_change - states.as_of).total_seconds()
    meta = SnapshotMeta(version=version, etag=etag, fresh_until=fresh_until, built_at=time.time())
    return meta, body, compressed


class SeatmapCache:
    """Versioned seat-map snapshots in Redis, rebuilt at most once at a time per event.

    Keys (one hash slot per event): the outbox consumer's version counter; ``meta`` (version,
    ETag, freshness); the body as JSON and as gzip, written together in one MULTI; the
    layout (static part, reused by every rebuild); a rebuild lock.

    A request reads the version, the meta and the body in one MGET. The snapshot is served
    when its version is not older than the counter and no hold it shows has passed its
    deadline. Otherwise one request (``SET NX`` on the lock) rebuilds from PostgreSQL while
    the others serve the previous snapshot; with none to serve, they wait for the rebuild.
    The lock stays for ``MIN_REBUILD_SECONDS`` after a rebuild, bounding rebuilds per event.

    Redis never decides a sale here: a lost or stale snapshot only shows an older map.
    Redis errors propagate (``redis.exceptions.RedisError``) for the caller to answer 503.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._unlock = redis.register_script(_UNLOCK)

    async def get(
        self,
        session: AsyncSession,
        event_id: uuid.UUID,
        render: Render,
        *,
        gzipped: bool,
        if_none_match: Collection[str] = (),
    ) -> Snapshot:
        """The current snapshot, or a not-modified answer when ``if_none_match`` names it.

        ``session`` is used only when a rebuild is due.

        Raises:
            EventNotFound: no such event, or it is not published (only ever found by a
                rebuild: a snapshot exists only for an event that did).
        """
        if if_none_match:
            # The common poll: answered from the version and the small meta, no body moved.
            current, meta, _ = await self._read(event_id, None)
            fresh = meta is not None and meta.serves(current, time.time())
            if fresh and meta is not None and etag_matches(if_none_match, meta.etag):
                return Snapshot(meta.version, meta.etag, None, gzipped)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            current, meta, body = await self._read(event_id, gzipped)
            if meta is not None and body is not None and meta.serves(current, time.time()):
                return self._answer(meta, body, gzipped, if_none_match)
            token = secrets.token_hex(16)
            if await self.redis.set(_lock_key(event_id), token, nx=True, ex=LOCK_SECONDS):
                rebuilt = False
                try:
                    meta, body = await self._rebuild(session, event_id, current, render, gzipped)
                    rebuilt = True
                finally:
                    # After a success the lock lingers to space rebuilds; after a failure it
                    # goes at once so a waiting request can try (and report) for itself.
                    linger = int(MIN_REBUILD_SECONDS * 1000) if rebuilt else 0
                    await self._unlock(keys=[_lock_key(event_id)], args=[token, linger])
                return self._answer(meta, body, gzipped, if_none_match)
            if meta is not None and body is not None:
                return self._answer(meta, body, gzipped, if_none_match)
            if time.monotonic() >= deadline:
                # The rebuilding request is stuck or gone: answer this fan anyway.
                meta, body = await self._rebuild(session, event_id, current, render, gzipped)
                return self._answer(meta, body, gzipped, if_none_match)
            await asyncio.sleep(POLL_SECONDS)

    async def invalidate(self, event_id: uuid.UUID) -> None:
        """Forget the event's layout and snapshot (after a layout or price edit)."""
        await self.redis.delete(*cached_keys(event_id))

    async def _read(
        self, event_id: uuid.UUID, gzipped: bool | None
    ) -> tuple[int, SnapshotMeta | None, bytes | None]:
        keys = [version_key(event_id), _meta_key(event_id)]
        if gzipped is not None:
            keys.append(_body_key(event_id, gzipped))
        values = [_as_bytes(value) for value in await self.redis.mget(keys)]
        current = int(values[0]) if values[0] is not None else 0
        meta = msgspec.msgpack.decode(values[1], type=SnapshotMeta) if values[1] is not None else None
        body = values[2] if gzipped is not None else None
        return current, meta, body

    async def _layout(self, session: AsyncSession, event_id: uuid.UUID) -> Layout:
        raw = _as_bytes(await self.redis.get(_layout_key(event_id)))
        if raw is not None:
            return msgspec.msgpack.decode(raw, type=Layout)
        layout = await load_layout(session, event_id)
        await self.redis.set(_layout_key(event_id), msgspec.msgpack.encode(layout), ex=LAYOUT_TTL_SECONDS)
        return layout

    async def _rebuild(
        self, session: AsyncSession, event_id: uuid.UUID, version: int, render: Render, gzipped: bool
    ) -> tuple[SnapshotMeta, bytes]:
        # ``version`` was read before these queries, and the consumer bumps it only after the
        # change committed, so the state read here includes every change up to it.
        layout = await self._layout(session, event_id)
        states = await load_states(session, event_id)
        meta, body, compressed = await _build(render, layout, states, version)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_meta_key(event_id), msgspec.msgpack.encode(meta), ex=SNAPSHOT_TTL_SECONDS)
            pipe.set(_body_key(event_id, False), body, ex=SNAPSHOT_TTL_SECONDS)
            pipe.set(_body_key(event_id, True), compressed, ex=SNAPSHOT_TTL_SECONDS)
            await pipe.execute()
        return meta, compressed if gzipped else body

    @staticmethod
    def _answer(meta: SnapshotMeta, body: bytes, gzipped: bool, if_none_match: Collection[str]) -> Snapshot:
        if if_none_match and etag_matches(if_none_match, meta.etag):
            return Snapshot(meta.version, meta.etag, None, gzipped)
        return Snapshot(meta.version, meta.etag, body, gzipped)


# --- without Redis -----------------------------------------------------------------------------


class LocalSnapshots:
    """Seat maps for when Redis cannot be reached: built from PostgreSQL and kept in this
    process as long as a Redis snapshot would be served (``SnapshotMeta.serves``: at most
    ``MAX_AGE_SECONDS``, and not past a shown hold's deadline), at most one rebuild per event
    at a time.

    The map must stay visible through a Redis outage (fans choosing seats, staff watching
    the sale); this keeps the database's share bounded to one rebuild per event per second
    per API process however many fans ask. ETags carry version 0, so a client's tag from
    the Redis snapshots never matches one of these (and the reverse), which only costs one
    full answer when Redis comes back.
    """

    def __init__(self) -> None:
        self._maps: dict[uuid.UUID, tuple[SnapshotMeta, bytes, bytes]] = {}
        self._layouts: dict[uuid.UUID, tuple[float, Layout]] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    def _current(self, event_id: uuid.UUID) -> tuple[SnapshotMeta, bytes, bytes] | None:
        found = self._maps.get(event_id)
        return found if found is not None and found[0].serves(0, time.time()) else None

    async def get(
        self,
        session: AsyncSession,
        event_id: uuid.UUID,
        render: Render,
        *,
        gzipped: bool,
        if_none_match: Collection[str] = (),
    ) -> Snapshot:
        """The seat map at most a second old, read from PostgreSQL.

        Raises:
            EventNotFound: no such event, or it is not published.
        """
        found = self._current(event_id)
        if found is None:
            async with self._locks.setdefault(event_id, asyncio.Lock()):
                found = self._current(event_id)
                if found is None:
                    found = await self._rebuild(session, event_id, render)
        meta, body, compressed = found
        return SeatmapCache._answer(meta, compressed if gzipped else body, gzipped, if_none_match)

    async def _rebuild(
        self, session: AsyncSession, event_id: uuid.UUID, render: Render
    ) -> tuple[SnapshotMeta, bytes, bytes]:
        now = time.monotonic()
        cached = self._layouts.get(event_id)
        if cached is None or now - cached[0] >= LAYOUT_TTL_SECONDS:
            cached = (now, await load_layout(session, event_id))
            self._layouts[event_id] = cached
        built = await _build(render, cached[1], await load_states(session, event_id), 0)
        self._maps[event_id] = built
        return built
