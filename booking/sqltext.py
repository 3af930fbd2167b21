"""Hot statements as SQL text, made once at import from the same expressions the ORM uses.

The buying path runs a few large statements (a hold is one CTE). Built as SQLAlchemy
constructs on every call, each would be re-assembled and have its cache key computed per
request, which costs more CPU than PostgreSQL spends running it. So they are composed once,
as text, from the compiled guards of ``booking.inventory.transitions`` (the rule still lives
in one place), and executed with named parameters; psycopg then prepares them server-side
after a few uses.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from sqlalchemy import ColumnElement, literal_column
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def param(name: str) -> Any:
    """A named parameter of the final text statement, usable inside an ORM expression."""
    return literal_column(f":{name}")


def sql(clause: ColumnElement[Any]) -> str:
    """The clause as PostgreSQL text, constants inlined, ``param`` names left as ``:name``."""
    return str(clause.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))


try:
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH
except ImportError:  # a psycopg that moved it; its value since 3.0
    MAX_CACHED_STATEMENT_LENGTH = 4096

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class HotStatement:
    """One statement of the buying path, run on the session's own connection and
    transaction straight through psycopg.

    The ORM session's execute path (execution state, compiled-cache lookup, parameter
    processing, result wrapping) cost more CPU per statement than PostgreSQL spent running
    these, on a path that runs them thousands of times a second. The statement still runs in
    the session's transaction (committed or rolled back with it), and errors come out as
    SQLAlchemy's, so callers and error handlers see no difference; a connection the server
    dropped is invalidated, as SQLAlchemy would.
    """

    def __init__(self, statement: str) -> None:
        self.text = statement
        # psycopg's own placeholders; prepared server-side after a few uses.
        self._driver_sql = _NAMED.sub(r"%(\1)s", statement.replace("%", "%%"))
        # psycopg keeps a statement's parse (placeholders found, query split) only for texts
        # up to this length, and parses a longer one again in Python on every execution: the
        # GA hold did so at 4.3 kB, a third of a millisecond of the API's CPU per hold.
        if len(self._driver_sql) > MAX_CACHED_STATEMENT_LENGTH:
            raise ValueError(
                f"a hot statement of {len(self._driver_sql)} characters would be parsed on every call"
                f" (psycopg caches up to {MAX_CACHED_STATEMENT_LENGTH}): {statement[:60]}…"
            )

    async def rows(self, session: AsyncSession, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Raises: sqlalchemy.exc.DBAPIError (its subclass for the driver's error)."""
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None, "a connection in use has its driver connection"
        try:
            async with raw.cursor() as cursor:
                await cursor.execute(self._driver_sql, params)
                return list(await cursor.fetchall()) if cursor.description else []
        except psycopg.Error as error:
            if isinstance(error, psycopg.OperationalError) and raw.closed:
                await connection.invalidate(error)
            raise DBAPIError.instance(self.text, params, error, psycopg.Error) from error
