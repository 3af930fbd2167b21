"""Hot statements as SQL text, made once at import from the same expressions the ORM uses.

The buying path runs a few large statements (a hold is one CTE). Built as SQLAlchemy
constructs on every call, each would be re-assembled and have its cache key computed per
request, which costs more CPU than PostgreSQL spends running it. So they are composed once,
as text, from the compiled guards of ``booking.inventory.transitions`` (the rule still lives
in one place), and executed with named parameters; psycopg then prepares them server-side
after a few uses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, literal_column
from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def param(name: str) -> Any:
    """A named parameter of the final text statement, usable inside an ORM expression."""
    return literal_column(f":{name}")


def sql(clause: ColumnElement[Any]) -> str:
    """The clause as PostgreSQL text, constants inlined, ``param`` names left as ``:name``."""
    return str(clause.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))
