"""Database plumbing: the declarative base, engines and sessions.

Engines are created per event loop by their owner (the API's lifespan, the worker daemon's
job loop, a job run elsewhere, a CLI command) and never shared across loops: a psycopg
connection is bound to the loop that opened it.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import DateTime, Enum, MetaData, create_engine, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection

from booking import metrics

# Stable constraint names, so migrations can drop and alter them by name on any server.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: DateTime(timezone=True),
        uuid.UUID: PG_UUID(as_uuid=True),
        dict[str, Any]: JSONB,
    }


def uuid_pk() -> Mapped[uuid.UUID]:
    """A random UUID primary key: ids that leave the system must not be guessable or counted."""
    return mapped_column(primary_key=True, server_default=text("gen_random_uuid()"))


def now_default() -> Mapped[dt.datetime]:
    """A timestamp column defaulting to the database clock, the only clock Boxoffice trusts."""
    return mapped_column(server_default=func.now())


def state_enum(enum_cls: type[enum.StrEnum], name: str) -> Enum:
    """A state column stored as text with a CHECK of its allowed values.

    Text plus CHECK rather than a native PostgreSQL enum: adding a state is then a plain
    constraint swap inside a migration, with no ALTER TYPE outside a transaction.
    """
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        validate_strings=True,
        length=max(len(member.value) for member in enum_cls),
        values_callable=lambda members: [member.value for member in members],
    )


def normalize_url(url: str) -> str:
    """Pin every PostgreSQL URL to the psycopg 3 driver, the only one Boxoffice ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+asyncpg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


LOCK_TIMEOUT = "3s"


class MeteredPool(AsyncAdaptedQueuePool):
    """The API's connection pool, measured: how long each checkout waited (opening a new
    connection included), how many waits ran out, and how many connections are in use.

    What it reports is exact after every checkout and return (read from the pool itself,
    not counted up and down), so a failed checkout cannot make the gauge drift. Costs two
    clock reads and three metric updates per checkout, no round trip.
    """

    # The label of its gauges.
    metrics_name = "api"
    # Its log lines under SQLAlchemy's own pool logger, quiet below warnings like the rest
    # of SQLAlchemy's, not under ours.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_use = metrics.DB_POOL_CHECKED_OUT.labels(self.metrics_name)
        metrics.DB_POOL_SIZE.labels(self.metrics_name).set(self.size())

    def connect(self) -> PoolProxiedConnection:
        """Raises: sqlalchemy.exc.TimeoutError (no connection free within the pool's
        timeout), and whatever opening a connection raises."""
        started = time.perf_counter()
        try:
            connection = super().connect()
        except PoolTimeout:
            metrics.DB_POOL_TIMEOUTS.inc()
            raise
        finally:
            metrics.DB_POOL_WAIT.observe(time.perf_counter() - started)
        self._in_use.set(self.checkedout())
        return connection

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        self._in_use.set(self.checkedout())


def make_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    # Every transaction of the application gives up waiting for a row lock after 3 s: a
    # pile-up becomes a clear "busy, retry" error instead of a hung request.
    # No pre-ping (a round trip per checkout): a connection found dead fails its one request
    # with a 503, and SQLAlchemy then discards the whole pool.
    # Statement parameters are fans' emails, password hashes and token digests: kept out of
    # error messages, which end up in logs.
    options: dict[str, Any] = {
        "pool_recycle": 1800,
        # psycopg's automatic preparing off: it deallocates every prepared statement of a
        # connection at each rollback, the buying path's own (``booking.sqltext``) included.
        "connect_args": {"options": f"-c lock_timeout={LOCK_TIMEOUT}", "prepare_threshold": None},
        "hide_parameters": True,
    }
    if "poolclass" not in kwargs:
        options.update(pool_size=10, max_overflow=20)
    options.update(kwargs)
    return create_async_engine(normalize_url(url), **options)


def make_sync_engine(url: str, **kwargs: Any) -> Engine:
    return create_engine(normalize_url(url), **kwargs)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def each_statement_commits(session: AsyncSession) -> None:
    """Run this fresh session's statements in autocommit: each is a whole transaction by
    itself. For a session of one statement (or of reads that stand alone): no ``BEGIN`` and
    no ``COMMIT`` round trips, and no ``ROLLBACK`` when it closes, which matters because
    psycopg forgets what it prepared on a connection at each rollback.

    Call it before the session's first statement; its ``commit`` and ``rollback`` then do
    nothing on the server."""
    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@asynccontextmanager
async def engine_scope(url: str, **kwargs: Any) -> AsyncIterator[AsyncEngine]:
    """An engine that lives exactly as long as the block (and so, its event loop)."""
    engine = make_async_engine(url, **kwargs)
    try:
        yield engine
    finally:
        await engine.dispose()
