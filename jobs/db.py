"""A database session for one job. RQ runs each async job on a new event loop, and a
connection belongs to the loop that opened it, so every job makes (and disposes) its own
engine; NullPool because a job's engine never outlives the job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from booking.db import engine_scope, make_sessionmaker
from booking.settings import get_settings


def database_url() -> str:
    url = get_settings().database_url
    if url is None:
        raise RuntimeError("jobs need BOXOFFICE_DATABASE_URL (boxoffice worker sets it from the local stack)")
    return url


def redis_url() -> str:
    url = get_settings().redis_url
    if url is None:
        raise RuntimeError("jobs need BOXOFFICE_REDIS_URL (boxoffice worker sets it from the local stack)")
    return url


@asynccontextmanager
async def job_sessions() -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory for jobs that run several transactions (with provider calls
    between them), on one engine disposed when the job ends."""
    async with engine_scope(database_url(), poolclass=NullPool) as engine:
        yield make_sessionmaker(engine)


@asynccontextmanager
async def job_session() -> AsyncIterator[AsyncSession]:
    async with (
        engine_scope(database_url(), poolclass=NullPool) as engine,
        make_sessionmaker(engine)() as session,
    ):
        yield session
