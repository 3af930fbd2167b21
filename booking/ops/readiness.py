"""Readiness: can this process reach PostgreSQL and Redis, and is the schema the one the code
was built for?

The API's ``GET /ready`` and ``boxoffice status`` run these same checks. Each one answers
within ``CHECK_TIMEOUT_SECONDS`` whatever the server does: a stopped server (SIGSTOP, a
frozen host) keeps its connections open and never answers, so the clients' own timeouts are
not relied on; the check is given up on at its deadline and reported ``unavailable``. A
server's failure is never raised: it is a result, with one line saying why.

The schema is ready when the database's Alembic revisions are exactly the heads of the
migration scripts shipped with this code. Revisions the scripts know but that are not heads
(or none at all) mean the database is ``behind`` (run ``boxoffice db upgrade``); a revision
the scripts do not know means a newer release has migrated it: the database is ``ahead`` of
this code.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from booking.migrations import alembic_config

# Probes ask every few seconds; a check slower than this is as good as down for them.
CHECK_TIMEOUT_SECONDS = 1.0

T = TypeVar("T")


class CheckStatus(enum.StrEnum):
    OK = "ok"
    UNAVAILABLE = "unavailable"
    # Migrations only: the database's schema is older, or newer, than this code's.
    BEHIND = "behind"
    AHEAD = "ahead"


@dataclass(frozen=True)
class Check:
    status: CheckStatus
    latency_ms: float
    # Why it is not ok, in one line (a driver's message names hosts: for operators, not for
    # the public readiness route).
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is CheckStatus.OK


@dataclass(frozen=True)
class MigrationCheck:
    status: CheckStatus
    latency_ms: float
    # The database's revision(s), comma-separated; None when none is recorded (an empty
    # database) or the database could not be asked.
    database_revision: str | None
    code_revision: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is CheckStatus.OK


@dataclass(frozen=True)
class ShippedRevisions:
    heads: frozenset[str]
    known: frozenset[str]

    @property
    def head(self) -> str:
        return ",".join(sorted(self.heads))


@functools.cache
def shipped_revisions() -> ShippedRevisions:
    """The heads and every revision of the migration scripts installed with this code, read
    once per process (the scripts do not change under a running process).

    Raises:
        FileNotFoundError: the installation has no migration scripts.
    """
    from alembic.script import ScriptDirectory

    # Only the script location matters here; no database is opened.
    script = ScriptDirectory.from_config(alembic_config(""))
    return ShippedRevisions(
        heads=frozenset(script.get_heads()),
        known=frozenset(revision.revision for revision in script.walk_revisions()),
    )


def migration_status(database: frozenset[str], shipped: ShippedRevisions) -> CheckStatus:
    """``ok`` when the database is at exactly the shipped heads, ``ahead`` when it records a
    revision these scripts do not know, else ``behind`` (an empty database included)."""
    if database == shipped.heads:
        return CheckStatus.OK
    if database - shipped.known:
        return CheckStatus.AHEAD
    return CheckStatus.BEHIND


def first_line(error: BaseException) -> str:
    """An error's first line; for a driver error wrapped by SQLAlchemy, the driver's."""
    orig = getattr(error, "orig", None)
    message = str(orig if orig is not None else error).strip()
    return message.splitlines()[0] if message else type(error).__name__


# Probes given up on at their deadline, kept referenced until they end by themselves. A
# psycopg query cancelled mid-way first asks the server to cancel it and waits seconds for
# that, which a frozen server never grants: awaiting the cancelled probe would be the very
# hang the deadline is there to prevent. It ends later, closing its connection.
_abandoned: set[asyncio.Task[Any]] = set()


def _abandon(task: asyncio.Task[Any]) -> None:
    task.cancel()
    _abandoned.add(task)

    def forget(done: asyncio.Task[Any]) -> None:
        _abandoned.discard(done)
        if not done.cancelled():
            done.exception()  # retrieved: it was already reported as a timeout

    task.add_done_callback(forget)


async def _timed(probe: Callable[[], Awaitable[T]], within: float) -> tuple[T | None, float, str | None]:
    """Run ``probe`` for at most ``within`` seconds: its result (None on failure), how long
    it took in milliseconds, and why it failed. Returns at the deadline even if the probe
    does not end when cancelled."""
    started = time.perf_counter()
    task: asyncio.Task[T] = asyncio.ensure_future(probe())
    try:
        await asyncio.wait({task}, timeout=within)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if not task.done():
        _abandon(task)
        return None, _since(started), f"no answer within {within:g}s"
    error = task.exception()
    if error is None:
        return task.result(), _since(started), None
    if isinstance(error, SQLAlchemyError | RedisError | OSError):
        return None, _since(started), first_line(error)
    raise error


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def check_database(engine: AsyncEngine, within: float = CHECK_TIMEOUT_SECONDS) -> Check:
    """``SELECT 1`` on a connection of ``engine``'s pool. A pool with no connection free
    within its own wait counts as unavailable too: this process cannot serve from it."""

    async def probe() -> bool:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True

    result, latency, error = await _timed(probe, within)
    return Check(CheckStatus.OK if result else CheckStatus.UNAVAILABLE, latency, error)


async def check_redis(redis: AsyncRedis, within: float = CHECK_TIMEOUT_SECONDS) -> Check:
    """``PING``."""

    async def probe() -> bool:
        return bool(await redis.ping())

    result, latency, error = await _timed(probe, within)
    return Check(CheckStatus.OK if result else CheckStatus.UNAVAILABLE, latency, error)


async def _database_revisions(connection: AsyncConnection) -> frozenset[str]:
    # Asked first, so an empty database is an answer ("behind"), not an error that would
    # also abort the transaction.
    table = await connection.scalar(text("SELECT to_regclass('alembic_version')"))
    if table is None:
        return frozenset()
    rows = await connection.scalars(text("SELECT version_num FROM alembic_version"))
    return frozenset(str(row) for row in rows)


async def check_migrations(engine: AsyncEngine, within: float = CHECK_TIMEOUT_SECONDS) -> MigrationCheck:
    """The database's Alembic revisions against the shipped heads: ``ok``, ``behind`` or
    ``ahead``; ``unavailable`` when the database cannot be asked in time."""
    try:
        shipped = await asyncio.to_thread(shipped_revisions)
    except FileNotFoundError as missing:
        return MigrationCheck(CheckStatus.UNAVAILABLE, 0.0, None, "unknown", str(missing))

    async def probe() -> frozenset[str]:
        async with engine.connect() as connection:
            return await _database_revisions(connection)

    revisions, latency, error = await _timed(probe, within)
    if revisions is None:
        return MigrationCheck(CheckStatus.UNAVAILABLE, latency, None, shipped.head, error)
    return MigrationCheck(
        migration_status(revisions, shipped),
        latency,
        ",".join(sorted(revisions)) or None,
        shipped.head,
    )


async def check_database_and_migrations(
    engine: AsyncEngine, within: float = CHECK_TIMEOUT_SECONDS
) -> tuple[Check, MigrationCheck]:
    """``check_database``, then ``check_migrations`` when the database answered: one pooled
    connection at a time, so probes never grow the pool, and a database that is away costs
    one deadline, not two (its migrations are then ``unavailable`` without asking)."""
    database = await check_database(engine, within)
    if database.ok:
        return database, await check_migrations(engine, within)
    try:
        head = (await asyncio.to_thread(shipped_revisions)).head
    except FileNotFoundError:
        head = "unknown"
    return database, MigrationCheck(CheckStatus.UNAVAILABLE, 0.0, None, head, "the database is unavailable")
