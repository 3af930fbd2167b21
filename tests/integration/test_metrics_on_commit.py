"""Counters of what a transaction decides move when, and only when, it commits."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from booking.db import make_sessionmaker
from booking.metrics import count_on_commit


@pytest.fixture
def counter() -> Counter:
    return Counter("things", "Things done.", registry=CollectorRegistry())


def value(counter: Counter) -> float:
    return counter._value.get()


async def test_counted_at_commit_not_before(session: AsyncSession, counter: Counter) -> None:
    await session.execute(text("SELECT 1"))
    count_on_commit(session, counter, 2)
    assert value(counter) == 0
    await session.commit()
    assert value(counter) == 2
    # A later commit of the same session does not count it again.
    await session.execute(text("SELECT 1"))
    await session.commit()
    assert value(counter) == 2


async def test_a_rollback_or_a_close_without_commit_counts_nothing(
    engine: AsyncEngine, counter: Counter
) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        await session.execute(text("SELECT 1"))
        count_on_commit(session, counter)
        await session.rollback()
        await session.commit()
    async with sessions() as session:
        await session.execute(text("SELECT 1"))
        count_on_commit(session, counter)
    async with sessions() as session:
        await session.commit()
    assert value(counter) == 0


async def test_a_savepoint_rolled_back_drops_only_its_own_counts(
    session: AsyncSession, counter: Counter
) -> None:
    await session.execute(text("SELECT 1"))
    count_on_commit(session, counter, 1)
    async with session.begin_nested():
        count_on_commit(session, counter, 10)

    async def undone() -> None:
        async with session.begin_nested():
            count_on_commit(session, counter, 100)
            async with session.begin_nested():
                count_on_commit(session, counter, 1000)
            raise RuntimeError("undo this savepoint")

    with pytest.raises(RuntimeError):
        await undone()
    # A released savepoint is not a commit.
    assert value(counter) == 0
    await session.commit()
    assert value(counter) == 11


async def test_outside_a_transaction_it_counts_at_once(session: AsyncSession, counter: Counter) -> None:
    count_on_commit(session, counter)
    assert value(counter) == 1
