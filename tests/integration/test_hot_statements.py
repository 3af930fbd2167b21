"""The buying path's statements are prepared once per connection and outlive rollbacks."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

import booking.holds.service
import booking.idempotency
import booking.orders.service
import booking.payments.offline
import booking.payments.service
from booking.db import make_sessionmaker
from booking.sqltext import HotStatement

MODULES = (
    booking.holds.service,
    booking.idempotency,
    booking.orders.service,
    booking.payments.offline,
    booking.payments.service,
)

_ECHO = HotStatement("SELECT CAST(:a AS integer) + CAST(:b AS integer), CAST(:a AS integer)")


async def _prepared(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            text("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'boxoffice_hot_%'")
        )
        or 0
    )


async def test_every_hot_statement_of_the_buying_path_prepares(session: AsyncSession) -> None:
    # PostgreSQL infers every parameter's type from the statement itself: none is left unknown.
    # Not from gc.get_objects(): an app built earlier in the process froze them out of it.
    statements = [o for o in HotStatement.made if o is not _ECHO]
    assert len(statements) >= 10, f"made at import by {len(MODULES)} modules"
    for statement in statements:
        await session.execute(text(statement._prepare.replace(":", "\\:")))
        types = await session.scalar(
            text("SELECT parameter_types FROM pg_prepared_statements WHERE name = :n"), {"n": statement._name}
        )
        assert types is not None, statement.text[:60]
        assert len(types) == len(statement._names), statement.text[:60]


async def test_a_statement_is_prepared_once_per_connection_and_outlives_a_rollback(
    engine: AsyncEngine,
) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        assert await _ECHO.rows(session, {"a": 2, "b": 3}) == [(5, 2)]
        await session.rollback()
        assert await _ECHO.rows(session, {"a": 7, "b": 1}) == [(8, 7)]
        assert await _prepared(session) == 1
        await session.rollback()
    # The pool's next session gets the same connection, the statement still prepared.
    async with sessions() as session:
        assert await _ECHO.rows(session, {"a": 1, "b": 1}) == [(2, 1)]
        assert await _prepared(session) == 1


async def test_arguments_are_bound_as_values_not_as_sql(session: AsyncSession) -> None:
    quoted = HotStatement("SELECT CAST(:word AS text), CAST(:none AS text)")
    tricky = "x'); DROP TABLE holds; --"
    assert await quoted.rows(session, {"word": tricky, "none": None}) == [(tricky, None)]


async def test_a_statement_deallocated_behind_its_back_is_prepared_again(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as session:
        assert await _ECHO.rows(session, {"a": 1, "b": 2}) == [(3, 1)]
        await session.execute(text("DEALLOCATE ALL"))
        await session.commit()
        with pytest.raises(DBAPIError, match="does not exist"):
            await _ECHO.rows(session, {"a": 1, "b": 2})
        await session.rollback()
        assert await _ECHO.rows(session, {"a": 4, "b": 4}) == [(8, 4)]
