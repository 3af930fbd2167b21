"""Hot statements as SQL text, made once at import from the same expressions the ORM uses.

The buying path runs a few large statements (a hold is one CTE). Built as SQLAlchemy
constructs on every call, each would be re-assembled and have its cache key computed per
request, which costs more CPU than PostgreSQL spends running it. So they are composed once,
as text, from the compiled guards of ``booking.inventory.transitions`` (the rule still lives
in one place), and executed with named parameters, each prepared once per connection
(``HotStatement`` says why not by psycopg).
"""

from __future__ import annotations

import itertools
import re
import weakref
from typing import Any, ClassVar

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


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class HotStatement:
    """One statement of the buying path, run on the session's own connection and
    transaction straight through psycopg, as a statement this module prepared on that
    connection.

    The ORM session's execute path (execution state, compiled-cache lookup, parameter
    processing, result wrapping) cost more CPU per statement than PostgreSQL spent running
    these, on a path that runs them thousands of times a second. The statement still runs in
    the session's transaction (committed or rolled back with it), and errors come out as
    SQLAlchemy's, so callers and error handlers see no difference; a connection the server
    dropped is invalidated, as SQLAlchemy would.

    Prepared here, not by psycopg: psycopg forgets (and deallocates) every statement it
    prepared on a connection whenever that connection rolls back, and a sale rolls back all
    the time (a sold-out hold, a taken seat, a closed read-only session). Each time, the next
    executions of these large statements were parsed and planned afresh: a third of
    PostgreSQL's CPU during a sale. A server-side prepared statement outlives rollbacks, so
    each is prepared once per connection (``PREPARE``, on first use) and run with
    ``EXECUTE``, its arguments bound client-side by psycopg (utility statements take no
    protocol parameters). The engine turns psycopg's own preparing off
    (``booking.db.make_async_engine``), so nothing deallocates these behind this module.
    """

    _numbers = itertools.count()
    # Every statement made (the buying path's are made at import), for the test that
    # prepares each one.
    made: ClassVar[weakref.WeakSet[HotStatement]] = weakref.WeakSet()

    def __init__(self, statement: str) -> None:
        HotStatement.made.add(self)
        self.text = statement
        names: list[str] = []
        for name in _NAMED.findall(statement):
            if name not in names:
                names.append(name)
        self._names = tuple(names)
        self._name = f"boxoffice_hot_{next(HotStatement._numbers)}"
        positional = _NAMED.sub(lambda m: f"${names.index(m.group(1)) + 1}", statement)
        self._prepare = f"PREPARE {self._name} AS {positional}"
        self._execute = (
            f"EXECUTE {self._name}({', '.join(['%s'] * len(names))})" if names else f"EXECUTE {self._name}"
        )

    async def rows(self, session: AsyncSession, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Raises: sqlalchemy.exc.DBAPIError (its subclass for the driver's error)."""
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None, "a connection in use has its driver connection"
        prepared = _prepared_on.setdefault(raw, set())
        try:
            if self._name not in prepared:
                async with raw.cursor() as cursor:
                    await cursor.execute(self._prepare, prepare=False)
                prepared.add(self._name)
            async with psycopg.AsyncClientCursor(raw) as cursor:
                await cursor.execute(self._execute, [params[name] for name in self._names], prepare=False)
                return list(await cursor.fetchall()) if cursor.description else []
        except psycopg.Error as error:
            if isinstance(error, psycopg.errors.InvalidSqlStatementName):
                # Deallocated by someone else: prepared again at the next use.
                prepared.clear()
            if isinstance(error, psycopg.OperationalError) and raw.closed:
                await connection.invalidate(error)
            raise DBAPIError.instance(self.text, params, error, psycopg.Error) from error


# The hot statements prepared on each driver connection, forgotten with the connection.
_prepared_on: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
