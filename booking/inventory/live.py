"""Live seat-map changes: what the outbox relay publishes for each event, where, and how a
client that reconnects catches up.

One Redis stream per event, written by the relay (``jobs.outbox``) and read by every API
process through Litestar's channels plugin (``api.seatmap_stream``). The stream has the form
of the plugin's Redis stream backend: key ``<KEY_PREFIX>_<channel upper-cased>``, fields
``data`` and ``channel``. ``booking`` may not import litestar, so the spelling lives here
and a test holds it to the plugin's.

What an entry says (``SeatmapChange``): the event's seat-map version after the change, the
units whose state changed (seat ids too, for seats) with their state *now*, and the places
left in every tier they belong to. The relay writes one entry per event per batch, not one
per ``units.changed`` fact: it folds the batch's facts into the set of units they name and
reads those units' states from PostgreSQL with the claim guard (``transitions.claimable``),
so a fact relayed late or twice states nothing stale, and an on-sale's hundreds of holds a
second reach each subscriber as about one message per relay round.

The history is the stream itself, capped at ``HISTORY_MESSAGES`` entries and gone
``HISTORY_SECONDS`` after the last one. Entry ids (``<ms>-<n>``, given by Redis, increasing)
are the SSE event ids: a client that names one still in the stream gets exactly the entries
after it (entries are only ever trimmed from the oldest end); any other id, older than the
history, from a Redis that lost its data, or not an id at all, cannot be caught up from.

States follow the seat map's vocabulary: ``available`` when a claim could take the unit
now, ``unavailable`` otherwise; never who holds it or why.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec
from redis.asyncio import Redis
from sqlalchemy import BigInteger, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from booking.catalog.models import Event
from booking.errors import EventNotFound
from booking.inventory.models import InventoryUnit as U
from booking.inventory.seatmap import HIDDEN_STATUSES, version_key
from booking.inventory.transitions import claimable

# The plugin's key prefix for our streams (its default is LITESTAR_CHANNELS).
KEY_PREFIX = "boxoffice:channels"
# About ten minutes of an on-sale at one entry per relay round, hours at quieter times: a
# client back within that catches up exactly, one later is told to refetch the snapshot.
HISTORY_MESSAGES = 1000
# An event nobody has changed for an hour needs no history: its snapshot is current.
HISTORY_SECONDS = 3600

UnitStateName = Literal["available", "unavailable"]


def channel(event_id: uuid.UUID | str) -> str:
    """The channels-plugin channel of one event's seat-map changes."""
    return f"seatmap:{event_id}"


def stream_key_of(channel_name: str) -> str:
    """The Redis stream of a channel, spelled as Litestar's Redis stream backend spells it."""
    return f"{KEY_PREFIX}_{channel_name.upper()}"


def stream_key(event_id: uuid.UUID | str) -> str:
    return stream_key_of(channel(event_id))


# --- what an entry says ----------------------------------------------------------------------


class UnitStates(msgspec.Struct, frozen=True):
    """Units now in ``state``; ``seat_ids`` are the seats among them (GA places have none)."""

    state: UnitStateName
    unit_ids: list[int]
    seat_ids: list[int]


class TierRemaining(msgspec.Struct, frozen=True):
    """Places a claim could take in the tier at ``as_of`` (seated and GA tiers alike)."""

    tier_id: uuid.UUID
    remaining: int


class SeatmapChange(msgspec.Struct, frozen=True):
    """One stream entry's data. ``version`` is the event's seat-map version once the change
    is counted: a client applies the entry when it is newer than the snapshot it holds."""

    event_id: uuid.UUID
    version: int
    as_of: dt.datetime
    units: list[UnitStates]
    tiers: list[TierRemaining]


@dataclass(frozen=True)
class Changes:
    """An event's changed units and touched tiers, as PostgreSQL sees them at ``as_of``."""

    as_of: dt.datetime
    units: list[UnitStates]
    tiers: list[TierRemaining]

    def at(self, event_id: uuid.UUID, version: int) -> SeatmapChange:
        return SeatmapChange(event_id, version, self.as_of, self.units, self.tiers)


_encoder = msgspec.json.Encoder()


def encode(change: SeatmapChange) -> bytes:
    return _encoder.encode(change)


def decode(data: bytes) -> SeatmapChange:
    return msgspec.json.decode(data, type=SeatmapChange)


_IDS = bindparam("unit_ids", type_=ARRAY(BigInteger))
_EVENTS = bindparam("event_ids", type_=ARRAY(UUID(as_uuid=True)))
_TIERS = bindparam("tier_ids", type_=ARRAY(UUID(as_uuid=True)))


async def read_changes(
    session: AsyncSession, units: Mapping[uuid.UUID, Collection[int]]
) -> dict[uuid.UUID, Changes]:
    """The current state of ``units`` (unit ids by event) and the places left in each tier
    they belong to: two statements whatever the number of events and units.

    Units are looked up by primary key; the counts use ``ix_inventory_units_claim`` (event,
    tier, state) with the claim guard, as ``seatmap.availability`` does. A unit id that no
    longer exists is left out. Events with no unit left to report are absent.
    """
    wanted = {unit_id: event_id for event_id, ids in units.items() for unit_id in ids}
    if not wanted:
        return {}
    rows = (
        await session.execute(
            select(func.now(), U.id, U.event_id, U.seat_id, U.price_tier_id, claimable()).where(
                U.id == any_(_IDS)
            ),
            {"unit_ids": sorted(wanted)},
        )
    ).all()
    if not rows:
        return {}
    as_of: dt.datetime = rows[0][0]
    by_state: dict[tuple[uuid.UUID, bool], tuple[list[int], list[int]]] = {}
    tiers: dict[uuid.UUID, set[uuid.UUID]] = {}
    for _, unit_id, event_id, seat_id, tier_id, free in sorted(rows, key=lambda row: row[1]):
        if wanted.get(unit_id) != event_id:
            continue  # a fact naming a unit of another event is not this event's change
        unit_ids, seat_ids = by_state.setdefault((event_id, bool(free)), ([], []))
        unit_ids.append(unit_id)
        if seat_id is not None:
            seat_ids.append(seat_id)
        tiers.setdefault(event_id, set()).add(tier_id)
    if not tiers:
        return {}
    counts = {
        (event_id, tier_id): remaining
        for event_id, tier_id, remaining in (
            await session.execute(
                select(U.event_id, U.price_tier_id, func.count())
                .where(U.event_id == any_(_EVENTS), U.price_tier_id == any_(_TIERS), claimable())
                .group_by(U.event_id, U.price_tier_id),
                {
                    "event_ids": sorted(tiers, key=str),
                    "tier_ids": sorted(set().union(*tiers.values()), key=str),
                },
            )
        ).all()
    }
    found: dict[uuid.UUID, Changes] = {}
    named: tuple[tuple[UnitStateName, bool], ...] = (("unavailable", False), ("available", True))
    for event_id, touched in tiers.items():
        states = [
            UnitStates(state, *by_state[(event_id, free)])
            for state, free in named
            if (event_id, free) in by_state
        ]
        remaining = [
            TierRemaining(tier_id, counts.get((event_id, tier_id), 0)) for tier_id in sorted(touched, key=str)
        ]
        found[event_id] = Changes(as_of, states, remaining)
    return found


# --- reading the history -----------------------------------------------------------------------

_ENTRY_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_PART = 2**64 - 1


def entry_order(entry_id: str) -> tuple[int, int] | None:
    """A stream entry id as a comparable pair, or None when ``entry_id`` is not one."""
    match = _ENTRY_ID.fullmatch(entry_id)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2])
    return (ms, seq) if ms <= _MAX_PART and seq <= _MAX_PART else None


@dataclass(frozen=True)
class Entry:
    id: str
    data: bytes


@dataclass(frozen=True)
class CatchUp:
    """Where an event's live changes stand for a client.

    ``version``: the seat-map version now. ``newest``: the id of the last entry in the
    history (None: there is none). ``missed``: the entries after the id the client named,
    oldest first (empty when it named none or is up to date), or None when they cannot be
    known from the history: the client must refetch the snapshot.
    """

    version: int
    newest: str | None
    missed: list[Entry] | None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def catch_up(redis: Redis, event_id: uuid.UUID, last_event_id: str | None) -> CatchUp:
    """Read the version and, for a client that names the last entry it saw, what it missed:
    one pipelined round trip.

    Raises:
        redis.exceptions.RedisError: Redis could not be read.
    """
    key = stream_key(event_id)
    start = last_event_id if last_event_id is not None and entry_order(last_event_id) else None
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(version_key(event_id))
        pipe.xrevrange(key, count=1)
        if start is not None:
            # Inclusive: the client's own entry must come first, proving nothing between
            # it and the rest was trimmed away.
            pipe.xrange(key, min=start, max="+")
        found = await pipe.execute()
    version = int(found[0] or 0)
    newest = _text(found[1][0][0]) if found[1] else None
    missed: list[Entry] | None
    if last_event_id is None:
        missed = []
    elif start is None:
        missed = None
    else:
        entries = [Entry(_text(entry_id), fields[b"data"]) for entry_id, fields in found[2]]
        missed = entries[1:] if entries and entries[0].id == last_event_id else None
        if missed:
            # Not one transaction: an entry appended between the two reads is in the range.
            newest = missed[-1].id
    return CatchUp(version=version, newest=newest, missed=missed)


async def check_event(session: AsyncSession, event_id: uuid.UUID) -> None:
    """That fans may see ``event_id``'s seat map.

    Raises:
        EventNotFound: no such event, or it is not published.
    """
    status = await session.scalar(select(Event.status).where(Event.id == event_id))
    if status is None or status in HIDDEN_STATUSES:
        raise EventNotFound()
