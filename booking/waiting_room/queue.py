"""An event's queue in Redis: Lua scripts, so that joins, polls, leaves and admission ticks
are each one atomic step, whatever runs at the same time.

Keys, one Redis Cluster slot per event (the ``{event_id}`` hash tag):

- ``queue``: sorted set, fan -> place. A fan who joined before the sale opened has a place
  drawn at random (52 secure random bits, from Python's ``secrets``: Redis's own random
  numbers are not meant to be unguessable) and below ``LATE_BASE``; a later fan gets
  ``LATE_BASE`` plus an arrival number. So at the opening the early fans stand in a uniformly
  random order, all before everyone who came after, who stand in arrival order. A place is
  given once: a join repeated while the place is kept returns it unchanged.
- ``seen``: sorted set, fan -> when they last joined or polled (ms). A fan not seen within the
  room's grace loses the place, at their next poll or at the next tick, whichever is first.
- ``seq``: the arrival counter.
- ``admitting``: hash, fan -> window end (ms): fans a tick has taken from the queue and is
  recording in PostgreSQL. Whatever a tick leaves here (it died) the next tick records.
- ``shopping``: sorted set, fan -> window end (ms): admitted fans, each recorded in
  PostgreSQL first. It mirrors the live admissions, and after Redis lost it a tick loads it
  again from PostgreSQL (``loaded`` in ``meta`` says it was).
- ``meta``: hash. ``credit`` (fractional admissions earned, not yet used), ``last`` (the
  latest tick's time: credit accrues only for time after it, so two ticks at once earn it
  once), ``since`` (when admission last started), ``measured`` (admissions per minute
  over the last minute), ``loaded``.
- ``log``: sorted set of ``<tick ms>:<admitted>`` per admitting tick of the last minute,
  what ``measured`` is computed from.

Times are the caller's (Unix milliseconds), so tests can run a sale's hour in a second.
Nothing here decides who may buy a seat; a lost queue only loses places, never admits twice
(``booking.waiting_room.service`` records every admission in PostgreSQL before it counts).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

# Early places are below it, late ones above; 2**52 + n is exact in a double (a ZSET score).
LATE_BASE = 2**52
EARLY_BITS = 52
# A tick admits at most this many fans of one room, and drops at most this many lapsed.
MAX_BATCH = 5000
MAX_DROP = 10_000
# Credit left unused (nobody waiting, the room full) is kept for at most this long's worth:
# an idle room does not build up a burst.
CARRY_MS = 2000
# Below this much time since admission started there is no measured rate yet.
MIN_MEASURE_MS = 5000
MEASURE_MS = 60_000

_KEYS = ("queue", "seen", "seq", "shopping", "admitting", "meta", "log")

_PROLOGUE = """
local queue, seen, seq, shopping, admitting, meta, log =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local function ms(n) return string.format('%.0f', n) end
local function place(fan)
  return {'queued', redis.call('ZRANK', queue, fan), redis.call('ZCARD', queue),
          redis.call('HGET', meta, 'measured') or ''}
end
-- A fan taken by a tick or admitted is not in the queue any more.
local function admitted(fan)
  local ends = redis.call('ZSCORE', shopping, fan)
  if ends then return {'admitted', ends} end
  ends = redis.call('HGET', admitting, fan)
  if ends then return {'admitting', ends} end
  return nil
end
"""


def _script(body: str, **values: int) -> str:
    """``body`` after the shared prologue, each ``$name`` replaced by its value."""
    for name, value in values.items():
        body = body.replace(f"${name}", str(value))
    return _PROLOGUE + body


# ARGV: fan, now, early (1/0), drawn place, grace.
_JOIN = _script(
    """
local fan, now, early, drawn, grace = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4], tonumber(ARGV[5])
local found = admitted(fan)
if found then return found end
local joined = 0
local score = redis.call('ZSCORE', queue, fan)
if score and tonumber(redis.call('ZSCORE', seen, fan) or '0') < now - grace then
  redis.call('ZREM', queue, fan)
  score = nil
end
if not score then
  if early then score = drawn else score = ms($late_base + redis.call('INCR', seq)) end
  redis.call('ZADD', queue, score, fan)
  redis.call('ZADD', seen, now, fan)
  joined = 1
else
  redis.call('ZADD', seen, 'GT', now, fan)
end
local answer = place(fan)
answer[5] = joined
return answer
""",
    late_base=LATE_BASE,
)

# ARGV: fan, now, grace.
_POLL = _script(
    """
local fan, now, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local found = admitted(fan)
if found then return found end
if not redis.call('ZSCORE', queue, fan) then return {'none'} end
if tonumber(redis.call('ZSCORE', seen, fan) or '0') < now - grace then
  redis.call('ZREM', queue, fan)
  redis.call('ZREM', seen, fan)
  return {'lapsed'}
end
redis.call('ZADD', seen, 'GT', now, fan)
return place(fan)
"""
)

# ARGV: fan.
_LEAVE = _script(
    """
local fan = ARGV[1]
local was = 'none'
if redis.call('ZREM', queue, fan) == 1 then was = 'queued' end
redis.call('ZREM', seen, fan)
if redis.call('ZREM', shopping, fan) == 1 then was = 'admitted' end
if redis.call('HDEL', admitting, fan) == 1 then was = 'admitted' end
return was
"""
)

# ARGV: now, admit (1/0), admission start (ms), rate per minute, max shoppers (-1: none),
# window, grace.
_TAKE = _script(
    """
local now, admit, opened = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local rate, most, window, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('HGET', meta, 'loaded') ~= '1' then return {'load'} end
local cutoff = now - grace
local lapsed = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. ms(cutoff), 'LIMIT', 0, $drop)
for i = 1, #lapsed do
  redis.call('ZREM', queue, lapsed[i])
  redis.call('ZREM', seen, lapsed[i])
end
redis.call('ZREMRANGEBYSCORE', shopping, '-inf', ms(now))
local credit = tonumber(redis.call('HGET', meta, 'credit') or '0')
local last = tonumber(redis.call('HGET', meta, 'last') or '-1')
local taken, fans = 0, {}
if admit then
  if not redis.call('HGET', meta, 'since') then redis.call('HSET', meta, 'since', ms(now)) end
  local from = math.max(last, opened)
  if now > from then credit = credit + rate * (now - from) / 60000 end
  credit = math.min(credit, math.max(1, rate * $carry / 60000))
  local n = math.min(math.floor(credit), $batch)
  if most >= 0 then
    local busy = redis.call('ZCOUNT', shopping, '(' .. ms(now), '+inf') + redis.call('HLEN', admitting)
    n = math.min(n, math.max(0, most - busy))
  end
  local ends = ms(now + window)
  while taken < n do
    local popped = redis.call('ZPOPMIN', queue, n - taken)
    if #popped == 0 then break end
    for i = 1, #popped, 2 do
      local fan = popped[i]
      local last_seen = tonumber(redis.call('ZSCORE', seen, fan) or '0')
      redis.call('ZREM', seen, fan)
      if last_seen >= cutoff then
        redis.call('HSET', admitting, fan, ends)
        taken = taken + 1
        fans[taken] = fan
      end
    end
  end
  credit = credit - taken
  redis.call('ZADD', log, now, ms(now) .. ':' .. taken)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. ms(now - $measure))
  local since = tonumber(redis.call('HGET', meta, 'since'))
  local span = now - math.max(since, now - $measure)
  if span >= $min_span then
    local total = 0
    for _, entry in ipairs(redis.call('ZRANGE', log, 0, -1)) do
      total = total + tonumber(string.match(entry, ':(%d+)$'))
    end
    redis.call('HSET', meta, 'measured', string.format('%.3f', total * 60000 / span))
  else
    redis.call('HDEL', meta, 'measured')
  end
else
  -- Paused, or not open yet: nothing is earned, and the next opening measures afresh.
  credit = 0
  redis.call('HDEL', meta, 'since', 'measured')
  redis.call('DEL', log)
end
if now > last then redis.call('HSET', meta, 'last', ms(now)) end
redis.call('HSET', meta, 'credit', string.format('%.6f', credit))
return {'taken', taken, #lapsed, redis.call('ZCARD', queue), fans, redis.call('HGETALL', admitting)}
""",
    drop=MAX_DROP,
    carry=CARRY_MS,
    batch=MAX_BATCH,
    measure=MEASURE_MS,
    min_span=MIN_MEASURE_MS,
)

# ARGV: fan, window end (ms), keep (1/0) for each admission recorded in PostgreSQL. Only
# the tick that finds a fan still in ``admitting`` moves it, so a second tick settling the
# same fans from an older read changes nothing.
_SETTLE = _script(
    """
local moved = 0
for i = 1, #ARGV, 3 do
  if redis.call('HDEL', admitting, ARGV[i]) == 1 and ARGV[i + 2] == '1' then
    redis.call('ZADD', shopping, ARGV[i + 1], ARGV[i])
    moved = moved + 1
  end
end
return moved
"""
)

# ARGV: fan, window end (ms) for each live admission in PostgreSQL.
_LOAD = _script(
    """
for i = 1, #ARGV, 2 do
  redis.call('ZADD', shopping, ARGV[i + 1], ARGV[i])
end
redis.call('HSET', meta, 'loaded', '1')
return #ARGV / 2
"""
)

# ARGV: now. The room's counts.
_STATUS = _script(
    """
local now = tonumber(ARGV[1])
return {redis.call('ZCARD', queue),
        redis.call('ZCOUNT', shopping, '(' .. ms(now), '+inf') + redis.call('HLEN', admitting),
        redis.call('HGET', meta, 'measured') or ''}
"""
)


def keys(event_id: uuid.UUID) -> list[str]:
    """The room's keys, in the order the scripts take them."""
    prefix = f"boxoffice:event:{{{event_id}}}:waiting-room"
    return [f"{prefix}:{name}" for name in _KEYS]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _measured(value: bytes | str) -> float | None:
    text = _text(value)
    return float(text) if text else None


@dataclass(frozen=True)
class Spot:
    """What Redis knows of one fan in one room. ``state``: ``queued`` (``rank`` fans ahead,
    ``depth`` waiting in all), ``admitting`` or ``admitted`` (``window_ends_ms``), ``lapsed``
    (the place was just dropped: not seen within the grace), ``none``. ``joined``: this call
    gave the fan a new place."""

    state: str
    rank: int | None = None
    depth: int | None = None
    window_ends_ms: int | None = None
    measured_per_minute: float | None = None
    joined: bool = False


def _spot(reply: Sequence[object]) -> Spot:
    state = _text(reply[0])  # type: ignore[arg-type]
    if state == "queued":
        return Spot(
            state,
            rank=int(reply[1]),  # type: ignore[call-overload]
            depth=int(reply[2]),  # type: ignore[call-overload]
            measured_per_minute=_measured(reply[3]),  # type: ignore[arg-type]
            joined=len(reply) > 4 and int(reply[4]) == 1,  # type: ignore[call-overload]
        )
    if state in ("admitted", "admitting"):
        return Spot(state, window_ends_ms=int(float(_text(reply[1]))))  # type: ignore[arg-type]
    return Spot(state)


@dataclass(frozen=True)
class Taken:
    """A tick's step in Redis. ``needs_load``: the shopping set must be loaded from
    PostgreSQL first (nothing else was done). ``taken``: the fans taken from the queue, in
    queue order. ``pending``: every fan in ``admitting`` (those just taken, and any an
    earlier tick left) with its window end, to record."""

    needs_load: bool
    taken: tuple[uuid.UUID, ...] = ()
    dropped: int = 0
    depth: int = 0
    pending: tuple[tuple[uuid.UUID, int], ...] = ()


@dataclass(frozen=True)
class Counts:
    depth: int
    shopping: int
    measured_per_minute: float | None


class RoomQueue:
    """One room's queue. Redis errors propagate (``redis.exceptions.RedisError``)."""

    def __init__(self, redis: Redis, event_id: uuid.UUID) -> None:
        self.keys = keys(event_id)
        self._redis = redis
        self._join = redis.register_script(_JOIN)
        self._poll = redis.register_script(_POLL)
        self._leave = redis.register_script(_LEAVE)
        self._take = redis.register_script(_TAKE)
        self._settle = redis.register_script(_SETTLE)
        self._load = redis.register_script(_LOAD)
        self._status = redis.register_script(_STATUS)

    async def join(self, fan_id: uuid.UUID, now_ms: int, *, early: bool, drawn: int, grace_ms: int) -> Spot:
        """Give the fan a place (``drawn`` if ``early``, else the next in arrival order), or
        keep the one they have; a fan taken or admitted is answered as such."""
        reply = await self._join(
            keys=self.keys, args=[str(fan_id), now_ms, "1" if early else "0", drawn, grace_ms]
        )
        return _spot(reply)

    async def poll(self, fan_id: uuid.UUID, now_ms: int, *, grace_ms: int) -> Spot:
        """Where the fan is, keeping the place (or dropping it, past the grace)."""
        return _spot(await self._poll(keys=self.keys, args=[str(fan_id), now_ms, grace_ms]))

    async def leave(self, fan_id: uuid.UUID) -> str:
        """Take the fan out: ``queued`` or ``admitted`` (what they were), or ``none``."""
        return _text(await self._leave(keys=self.keys, args=[str(fan_id)]))

    async def shopping_until(self, fan_id: uuid.UUID) -> int | None:
        """The window end (ms) of the fan's admission as Redis mirrors it, if it does."""
        score = await self._redis.zscore(self.keys[3], str(fan_id))
        return int(score) if score is not None else None

    async def take(
        self,
        now_ms: int,
        *,
        admit: bool,
        opened_ms: int,
        rate_per_minute: int,
        max_shoppers: int | None,
        window_ms: int,
        grace_ms: int,
    ) -> Taken:
        """Drop the lapsed fans, earn credit for the time since the last tick (``admit``
        only: the sale is open and the room not paused) and move as many fans as it allows,
        and ``max_shoppers`` leaves room for, from the queue to ``admitting``."""
        reply = await self._take(
            keys=self.keys,
            args=[
                now_ms,
                "1" if admit else "0",
                opened_ms,
                rate_per_minute,
                -1 if max_shoppers is None else max_shoppers,
                window_ms,
                grace_ms,
            ],
        )
        if _text(reply[0]) == "load":
            return Taken(needs_load=True)
        flat = reply[5]
        pending = tuple((uuid.UUID(_text(flat[i])), int(_text(flat[i + 1]))) for i in range(0, len(flat), 2))
        taken = tuple(uuid.UUID(_text(fan)) for fan in reply[4])
        return Taken(False, taken, int(reply[2]), int(reply[3]), pending)

    async def settle(self, admissions: Sequence[tuple[uuid.UUID, int, bool]]) -> int:
        """Move recorded admissions (fan, window end, still live) from ``admitting`` to
        ``shopping``; returns how many moved."""
        if not admissions:
            return 0
        args: list[str | int] = []
        for fan_id, ends_ms, live in admissions:
            args += [str(fan_id), ends_ms, "1" if live else "0"]
        return int(await self._settle(keys=self.keys, args=args))

    async def load(self, live: Sequence[tuple[uuid.UUID, int]]) -> None:
        """Put PostgreSQL's live admissions (fan, window end) back into ``shopping``."""
        args: list[str | int] = []
        for fan_id, ends_ms in live:
            args += [str(fan_id), ends_ms]
        await self._load(keys=self.keys, args=args)

    async def counts(self, now_ms: int) -> Counts:
        depth, shopping, measured = await self._status(keys=self.keys, args=[now_ms])
        return Counts(int(depth), int(shopping), _measured(measured))

    async def forget(self) -> None:
        """Delete the room's queue (its record in PostgreSQL stays)."""
        await self._redis.delete(*self.keys)
