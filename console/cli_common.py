"""What every on-call command shares: where the servers are, output for people and for
scripts, confirmation of destructive acts, and the exit codes.

Exit codes (stable; scripts rely on them):
  0 done; 1 failed (unreachable server, unknown id, refused by the system, declined);
  2 bad usage (bad option, or a destructive act without ``--yes`` and no terminal to ask on);
  3 nothing to do (no stuck orders, an empty queue, no expired holds...).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, is_dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from redis import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from booking.redis_client import sync_client
from booking.settings import Settings
from console.stack import StackInfo

OK, FAILED, USAGE, NOTHING = 0, 1, 2, 3

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking for confirmation.")]

out = Console()
err = Console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = FAILED) -> NoReturn:
    """One line on stderr naming what is wrong, and the exit code; never a traceback."""
    err.print(f"[bold red]boxoffice:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def nothing(message: str, as_json: bool, payload: Any = None) -> NoReturn:
    """Exit 3: there was nothing to do. JSON callers still get a document on stdout."""
    if as_json:
        print_json(payload if payload is not None else {"done": 0})
    else:
        out.print(message, highlight=False)
    raise typer.Exit(NOTHING)


def settings_of(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


def ops_database_url(settings: Settings) -> str:
    """The configured database, else the one of a running ``boxoffice up``. On-call commands
    never start a server of their own: acting on an empty embedded one would mislead."""
    if settings.database_url is not None:
        return settings.database_url
    info = StackInfo.read(settings.data_dir)
    if info is None:
        fail("no database: set BOXOFFICE_DATABASE_URL, or start the local stack with `boxoffice up`")
    return info.database_url


def ops_redis(settings: Settings) -> Redis:
    """A client for the configured Redis, else the one of a running ``boxoffice up``."""
    url = settings.redis_url
    if url is None:
        info = StackInfo.read(settings.data_dir)
        if info is None:
            fail("no Redis: set BOXOFFICE_REDIS_URL, or start the local stack with `boxoffice up`")
        url = info.redis_url
    # A command typed by a person may wait a little longer than a request.
    return sync_client(url, command_timeout=5.0)


def with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one session on the ops database and return its result. The caller
    commits inside ``work`` when it changes something. An unreachable database is one line."""
    from booking.db import engine_scope, make_sessionmaker

    url = ops_database_url(settings)

    async def run() -> T:
        async with (
            engine_scope(url, pool_size=1, max_overflow=0) as engine,
            make_sessionmaker(engine)() as session,
        ):
            return await work(session)

    try:
        return asyncio.run(run())
    except OperationalError as error:
        first = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        fail(f"cannot reach the database: {first}")
    except RedisError as error:
        fail(f"cannot reach Redis: {error}")


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive act. Without a terminal to ask on, refuse (exit 2) unless
    ``--yes`` was given: a script must say it means it."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{question.rstrip('?')}: refusing without --yes (no terminal to confirm on)", code=USAGE)
    if not typer.confirm(question, default=False):
        fail("cancelled; nothing changed")


def plain(value: Any) -> Any:
    """A JSON-ready copy of dataclasses, enums, ids and times."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def print_json(payload: Any) -> None:
    # Plain print, not Rich: scripts get exactly one JSON document, no markup or wrapping.
    sys.stdout.write(json.dumps(plain(payload), indent=2, sort_keys=True) + "\n")


def show(
    rows: Sequence[Any],
    columns: Sequence[tuple[str, str]],
    *,
    as_json: bool,
    title: str,
    empty: str,
) -> None:
    """Rows as a Rich table (``columns``: attribute or key, heading) or, with ``--json``,
    as ``{"items": [...]}`` with every field of every row."""
    items = [plain(row) for row in rows]
    if as_json:
        print_json({"items": items})
        return
    if not items:
        out.print(empty, highlight=False)
        return
    table = Table(title=title, title_justify="left")
    for _, heading in columns:
        table.add_column(heading)
    for item in items:
        table.add_row(*("" if item.get(key) is None else str(item.get(key)) for key, _ in columns))
    out.print(table)
