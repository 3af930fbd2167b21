"""The worker daemons' heartbeats in Redis: written by each daemon, read by ``GET /ready``,
``boxoffice status`` and anything else that asks whether the daemons are there.

Each daemon keeps one hash, ``boxoffice:daemon:<host>:<pid>``, rewritten every ``interval``
seconds by a thread of its own (so a long job does not silence it) and set to expire after
``TTL_INTERVALS`` intervals. It holds the daemon's pid, host, start, queues, its worker's
state and current job, when each periodic task (``daemon.periodic.PERIODIC``) last finished
successfully in it, and, written by its ticker process, when the ticker last ticked and which
queues it schedules. A daemon that stops cleanly deletes its hash. One killed outright stops
beating: it reads as ``stale`` once ``STALE_INTERVALS`` intervals have passed without a beat,
and is gone (``missing`` if it was the last) once its hash expires.

The sorted set ``boxoffice:daemons`` (member: daemon id, score: time of its last beat) lets
readers find the hashes without a SCAN of a keyspace that holds every waiting-room and
rate-limit key. Each beat drops members whose hash has expired by then.

Times are Unix seconds on the writer's clock and ages are the reader's clock minus them, so
daemons and readers on different hosts are assumed to keep time (NTP); a skew shows as an age
off by that much. Only Redis is used here, no RQ: the API and the console import this freely.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from booking.redis_client import sync_client

PREFIX = "boxoffice:daemon:"
INDEX = "boxoffice:daemons"
DEFAULT_INTERVAL = 5.0
# Two beats missed: late enough that a busy host or a slow Redis round trip is not taken for
# a dead daemon, early enough for a probe to notice within a quarter of a minute.
STALE_INTERVALS = 3
# Long enough after going stale for an operator to see which daemon went quiet and when.
TTL_INTERVALS = 12
RUN_FIELD = "run:"

log = logging.getLogger("boxoffice.heartbeat")


class DaemonStatus(enum.StrEnum):
    ALIVE = "alive"
    STALE = "stale"
    MISSING = "missing"
    # Redis could not be asked.
    UNKNOWN = "unknown"


def ttl_seconds(interval: float) -> float:
    return interval * TTL_INTERVALS


# -- writing ------------------------------------------------------------------------------


class WorkerLike(Protocol):
    """What the heartbeat reads of the daemon's RQ worker (plain attribute reads in RQ, safe
    from another thread)."""

    def get_state(self) -> Any: ...

    def get_current_job_id(self) -> str | None: ...


class Heartbeat:
    """One daemon's heartbeat: a thread that rewrites the daemon's record every ``interval``
    seconds until ``stop``, which deletes it.

    The worker reports cheaply from its job loop (``attach``, ``detach``,
    ``note_success``: memory only, no Redis round trip); the next beat publishes it. A Redis
    error skips a beat, logged once until one succeeds again; the thread never dies of it.
    """

    def __init__(
        self,
        redis_url: str,
        queues: Sequence[str],
        *,
        interval: float = DEFAULT_INTERVAL,
        daemon_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis_url = redis_url
        self.interval = interval
        self.id = daemon_id or f"{socket.gethostname()}:{os.getpid()}"
        self.key = PREFIX + self.id
        self.clock = clock
        self.started_at = clock()
        self._static = {
            "pid": str(os.getpid()),
            "host": socket.gethostname(),
            "started_at": repr(self.started_at),
            "queues": ",".join(queues),
            "interval": repr(interval),
        }
        self._lock = threading.Lock()
        self._worker: WorkerLike | None = None
        self._state = "starting"
        self._runs: dict[str, float] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: Redis | None = None
        self._failing = False

    @property
    def ticker(self) -> TickerBeat:
        """What the daemon's ticker process needs to add its part to this record."""
        return TickerBeat(daemon_id=self.id, interval=self.interval)

    def attach(self, worker: WorkerLike) -> None:
        """Report ``worker``'s state and current job from now on."""
        with self._lock:
            self._worker = worker

    def detach(self, state: str) -> None:
        """No worker runs (between two, while Redis is away): report ``state`` instead."""
        with self._lock:
            self._worker = None
            self._state = state

    def note_success(self, task: str, at: float | None = None) -> None:
        """The periodic task ``task`` has just finished successfully in this daemon."""
        with self._lock:
            self._runs[task] = self.clock() if at is None else at

    def _fields(self, now: float) -> dict[str, str]:
        with self._lock:
            worker, state, runs = self._worker, self._state, dict(self._runs)
        current = None
        if worker is not None:
            raw = worker.get_state()
            state = str(raw.value if isinstance(raw, enum.Enum) else raw)
            current = worker.get_current_job_id()
        fields = {**self._static, "state": state, "current_job": current or "", "beat_at": repr(now)}
        fields.update({RUN_FIELD + task: repr(at) for task, at in runs.items()})
        return fields

    def beat(self) -> None:
        """Write the record now.

        Raises:
            RedisError: Redis did not take it.
        """
        if self._redis is None:
            self._redis = sync_client(self.redis_url)
        now = self.clock()
        ttl_ms = math.ceil(ttl_seconds(self.interval) * 1000)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, mapping=self._fields(now))  # type: ignore[arg-type]
            pipe.pexpire(self.key, ttl_ms)
            pipe.zadd(INDEX, {self.id: now})
            # Members beating more slowly than this daemon linger up to their own TTL: a
            # reader skips a member whose hash is gone, so dropping late is harmless.
            pipe.zremrangebyscore(INDEX, "-inf", now - ttl_seconds(self.interval))
            pipe.pexpire(INDEX, ttl_ms)
            pipe.execute()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.beat()
                if self._failing:
                    log.warning("heartbeat written again")
                self._failing = False
            except RedisError as error:
                if not self._failing:
                    log.warning("heartbeat skipped, Redis unreachable: %s", error)
                self._failing = True
            self._stopping.wait(self.interval)

    def start(self) -> None:
        """Beat now and every ``interval`` seconds, in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="boxoffice-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and delete the record (a clean stop is not a stale daemon). With Redis
        away the record is left to expire."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        redis = self._redis or sync_client(self.redis_url)
        try:
            with redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key)
                pipe.zrem(INDEX, self.id)
                pipe.execute()
        except RedisError as error:
            log.warning("heartbeat not removed, Redis unreachable: %s", error)
        finally:
            redis.close()
            self._redis = None


@dataclass(frozen=True)
class TickerBeat:
    """The ticker's part of its daemon's record. Plain data, handed to the ticker process."""

    daemon_id: str
    interval: float

    def write(self, redis: Redis, *, pid: int, now: float, scheduling: Sequence[str]) -> None:
        """Record that the ticker ``pid`` ticked at ``now`` and holds the scheduler locks of
        ``scheduling``. The write renews the record's expiry, so a daemon whose worker hangs
        while its ticker lives reads as stale, not as gone.

        Raises:
            RedisError: Redis did not take it.
        """
        key = PREFIX + self.daemon_id
        with redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={"ticker_pid": str(pid), "ticked_at": repr(now), "scheduling": ",".join(scheduling)},
            )
            pipe.pexpire(key, math.ceil(ttl_seconds(self.interval) * 1000))
            pipe.execute()


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRun:
    task: str
    at: dt.datetime
    age_seconds: float


@dataclass(frozen=True)
class DaemonBeat:
    """One daemon as its last heartbeat shows it."""

    id: str
    pid: int
    host: str
    status: DaemonStatus  # alive or stale
    started_at: dt.datetime
    beat_at: dt.datetime
    age_seconds: float
    interval_seconds: float
    queues: list[str]
    state: str
    current_job: str | None
    # Periodic task name -> its last successful run in this daemon.
    last_runs: dict[str, TaskRun]
    ticker_pid: int | None
    ticker_age_seconds: float | None
    scheduling: list[str]


@dataclass(frozen=True)
class DaemonSummary:
    """All daemons at once: ``alive`` when at least one beats, ``stale`` when some record is
    left but none beats, ``missing`` when there is none, ``unknown`` when Redis could not be
    read. ``last_heartbeat_age_seconds`` is the age of the newest beat of any daemon."""

    status: DaemonStatus
    last_heartbeat_age_seconds: float | None
    alive: int
    stale: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _moment(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def parse(daemon_id: str, record: Mapping[Any, Any], now: float) -> DaemonBeat | None:
    """A daemon's record as read from Redis, judged at ``now``; None when there is none or it
    is not a whole record (a ticker's write racing the daemon's clean stop)."""
    fields = {_text(k): _text(v) for k, v in record.items()}
    try:
        beat_at = float(fields["beat_at"])
        interval = float(fields["interval"])
        pid = int(fields["pid"])
        started_at = float(fields["started_at"])
    except (KeyError, ValueError):
        return None
    age = max(0.0, now - beat_at)
    runs = {}
    for name, value in fields.items():
        if name.startswith(RUN_FIELD):
            try:
                at = float(value)
            except ValueError:
                continue
            task = name.removeprefix(RUN_FIELD)
            runs[task] = TaskRun(task, _moment(at), round(max(0.0, now - at), 3))
    ticked_at = fields.get("ticked_at")
    try:
        ticker_age = round(max(0.0, now - float(ticked_at)), 3) if ticked_at else None
        ticker_pid = int(fields["ticker_pid"]) if fields.get("ticker_pid") else None
    except ValueError:
        ticker_age = ticker_pid = None
    return DaemonBeat(
        id=daemon_id,
        pid=pid,
        host=fields.get("host", ""),
        status=DaemonStatus.STALE if age > STALE_INTERVALS * interval else DaemonStatus.ALIVE,
        started_at=_moment(started_at),
        beat_at=_moment(beat_at),
        age_seconds=round(age, 3),
        interval_seconds=interval,
        queues=[q for q in fields.get("queues", "").split(",") if q],
        state=fields.get("state", ""),
        current_job=fields.get("current_job") or None,
        last_runs=runs,
        ticker_pid=ticker_pid,
        ticker_age_seconds=ticker_age,
        scheduling=[q for q in fields.get("scheduling", "").split(",") if q],
    )


def _parse_all(ids: list[Any], records: list[Any], now: float) -> list[DaemonBeat]:
    beats = [parse(_text(i), record, now) for i, record in zip(ids, records, strict=True)]
    return sorted((b for b in beats if b is not None), key=lambda b: b.id)


def read_daemons(redis: Redis, now: float | None = None) -> list[DaemonBeat]:
    """Every daemon with a record, alive or stale, by id.

    Raises:
        RedisError: Redis could not be read.
    """
    ids = list(redis.zrange(INDEX, 0, -1))
    with redis.pipeline(transaction=False) as pipe:
        for daemon_id in ids:
            pipe.hgetall(PREFIX + _text(daemon_id))
        records = pipe.execute()
    return _parse_all(ids, records, time.time() if now is None else now)


async def read_daemons_async(redis: AsyncRedis, now: float | None = None) -> list[DaemonBeat]:
    """``read_daemons`` on an asyncio client.

    Raises:
        RedisError: Redis could not be read.
    """
    ids = list(await redis.zrange(INDEX, 0, -1))
    async with redis.pipeline(transaction=False) as pipe:
        for daemon_id in ids:
            pipe.hgetall(PREFIX + _text(daemon_id))
        records = await pipe.execute()
    return _parse_all(ids, records, time.time() if now is None else now)


def summarize(beats: Sequence[DaemonBeat]) -> DaemonSummary:
    alive = sum(1 for beat in beats if beat.status is DaemonStatus.ALIVE)
    if alive:
        status = DaemonStatus.ALIVE
    elif beats:
        status = DaemonStatus.STALE
    else:
        status = DaemonStatus.MISSING
    newest = min((beat.age_seconds for beat in beats), default=None)
    return DaemonSummary(status, newest, alive, len(beats) - alive)


UNKNOWN = DaemonSummary(DaemonStatus.UNKNOWN, None, 0, 0)


def last_run(beats: Sequence[DaemonBeat], task: str) -> TaskRun | None:
    """The newest successful run of ``task`` in any daemon."""
    runs = [beat.last_runs[task] for beat in beats if task in beat.last_runs]
    return min(runs, key=lambda run: run.age_seconds, default=None)
