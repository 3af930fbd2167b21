"""What every on-call command shares: where the servers are, output for people and for
scripts, confirmation of destructive acts, audit rows, and the exit codes.

Exit codes (stable; scripts rely on them):
  0 done; 1 failed (unreachable server, unknown id, refused by the system, declined);
  2 bad usage (bad option, or a destructive act without ``--yes`` and no terminal to ask on);
  3 nothing to do (no stuck orders, an empty queue, no expired holds...).

Start-up stays cheap: this module, and every module that declares commands, imports only
Typer, Rich and the standard library when it is loaded. Whatever talks to a server (the
database, Redis, RQ, the booking services) is imported inside the function that needs it,
so ``boxoffice --help`` and ``--version`` load none of it and a command loads only its own.
A new command follows the same shape: a light declaration whose body imports its
implementation (see ``status`` in ``console/cli.py``).

Tables never cut an id (a uuid, a hold, order or job id): an operator copies them into the
next command. On a narrow terminal the other columns wrap first, then the last ones are left
out, and where even that is too wide each row is printed as lines of ``heading: value``.
Output that is not a terminal is drawn as wide as the table needs, unless ``COLUMNS`` says
otherwise.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, NoReturn, TypeVar

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy.ext.asyncio import AsyncSession

    from booking.errors import BookingError
    from booking.ops.models import Outcome
    from booking.settings import Settings

OK, FAILED, USAGE, NOTHING = 0, 1, 2, 3

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking for confirmation.")]

out = Console()
err = Console(stderr=True)
T = TypeVar("T")
R = TypeVar("R")


# -- messages and exits -------------------------------------------------------------------


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its class name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe(error: BookingError) -> str:
    """A refusal by the system in one line: its title, and its detail when that says more."""
    return error.title if error.detail == error.title else f"{error.title}: {error.detail}"


def say(message: str) -> None:
    """One line for people on stdout, never broken by Rich: an id in it stays whole to copy."""
    out.print(message, highlight=False, markup=False, soft_wrap=True)


def report(as_json: bool, payload: Any, *lines: str) -> None:
    """What a command did: ``payload`` as one JSON document for scripts (``--json``), or
    ``lines`` for people, each whole (see ``say``)."""
    if as_json:
        print_json(payload)
        return
    for line in lines:
        say(line)


def fail(message: str, code: int = FAILED) -> NoReturn:
    """One line on stderr naming what is wrong, and the exit code; never a traceback."""
    err.print(Text.assemble(("boxoffice:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def nothing(message: str, as_json: bool, payload: Any = None) -> NoReturn:
    """Exit 3: there was nothing to do. JSON callers still get a document on stdout."""
    if as_json:
        print_json(payload if payload is not None else {"done": 0})
    else:
        say(message)
    raise typer.Exit(NOTHING)


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive act. Without a terminal to ask on, refuse (exit 2) unless
    ``--yes`` was given: a script must say it means it."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{question.rstrip('?')}: refusing without --yes (no terminal to confirm on)", code=USAGE)
    if not typer.confirm(question, default=False):
        fail("cancelled; nothing changed")


def enum_parser(members: Callable[[], type[enum.Enum]]) -> Callable[[str], str]:
    """A Typer ``parser`` for an option that takes one of an enum's values, in any case. The
    enum (``members()``; they live beside the database models) is imported when the option
    is given, not when the command is declared. Returns the value as the enum spells it.

    Raises:
        typer.BadParameter: not one of the values (exit 2; the message lists them).
    """

    def parse(text: str) -> str:
        values = [str(member.value) for member in members()]
        for value in values:
            if text.casefold() == value.casefold():
                return value
        raise typer.BadParameter(f"{text!r} is not one of {', '.join(values)}")

    return parse


def count(number: int, noun: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def duration(seconds: float | None) -> str:
    """How long, to the second under a minute and to the minute beyond (``42s``, ``3m 07s``,
    ``2h 05m``); empty for none."""
    if seconds is None:
        return ""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def when(moment: dt.datetime | None) -> str:
    """A moment as every command prints it: UTC to the second; empty for none."""
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- settings and servers -----------------------------------------------------------------


def settings_of(ctx: typer.Context) -> Settings:
    """This run's settings, read from the environment by the first command that asks (so that
    help and the version never load them), then kept on the root context.

    A setting Boxoffice cannot use ends the command: one line naming it, exit 2."""
    from booking.settings import Settings, SettingsError, load_settings

    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        try:
            root.obj = load_settings()
        except SettingsError as error:
            fail(str(error), code=USAGE)
    settings = root.obj
    assert isinstance(settings, Settings)
    return settings


def ops_database_url(settings: Settings) -> str:
    """The configured database, else the one of a running ``boxoffice up``. On-call commands
    never start a server of their own: acting on an empty embedded one would mislead."""
    if settings.database_url is not None:
        return settings.database_url
    from console.stack import StackInfo

    info = StackInfo.read(settings.data_dir)
    if info is None:
        fail("no database: set BOXOFFICE_DATABASE_URL, or start the local stack with `boxoffice up`")
    return info.database_url


def ops_redis_url(settings: Settings) -> str:
    """The configured Redis, else the one of a running ``boxoffice up``."""
    if settings.redis_url is not None:
        return settings.redis_url
    from console.stack import StackInfo

    info = StackInfo.read(settings.data_dir)
    if info is None:
        fail("no Redis: set BOXOFFICE_REDIS_URL, or start the local stack with `boxoffice up`")
    return info.redis_url


def ops_redis(settings: Settings) -> Redis:
    """A client for the configured Redis, else the one of a running ``boxoffice up``."""
    from booking.redis_client import sync_client

    # A command typed by a person may wait a little longer than a request.
    return sync_client(ops_redis_url(settings), command_timeout=5.0)


def with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]], subject: str = "") -> T:
    """Run ``work`` in one session on the ops database and return its result. The caller
    commits inside ``work`` when it changes something.

    An unreachable database or Redis is one line and exit 1, and so is a refusal by the
    system (a ``BookingError``), prefixed with ``subject`` (``"hold 4920…"``) when given."""
    import asyncio

    from sqlalchemy.exc import OperationalError, ProgrammingError

    from booking.db import engine_scope, make_sessionmaker
    from booking.errors import BookingError

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
        fail(f"cannot reach the database: {first_line(error.orig or error)}")
    except ProgrammingError as error:
        refused = first_line(error.orig or error)
        fail(f"the database refused: {refused} (is it migrated? `boxoffice db upgrade`)")
    except BookingError as error:
        fail(f"{subject}: {describe(error)}" if subject else describe(error))
    except Exception as error:
        if is_redis_error(error):
            fail(f"cannot reach Redis: {first_line(error)}")
        raise


# -- audit rows ---------------------------------------------------------------------------


async def record(
    session: AsyncSession,
    *,
    action: str,
    outcome: Outcome,
    target_type: str | None,
    target_id: str | None,
    details: Mapping[str, Any],
) -> None:
    """Write one audit row as the person at this terminal, and commit it."""
    from booking.ops import audit

    await audit.record(
        session,
        actor=audit.Actor.cli(),
        action=action,
        outcome=outcome,
        target_type=target_type,
        target_id=target_id,
        details=dict(details),
    )
    await session.commit()


def is_redis_error(error: BaseException) -> bool:
    """Whether ``error`` is a Redis client's, asked without importing Redis: an error can only
    be one once the client has been imported, and a command that never touched Redis should
    not load it to find out."""
    module = sys.modules.get("redis.exceptions")
    return module is not None and isinstance(error, module.RedisError)


def _problem(error: BaseException) -> dict[str, str]:
    from booking.errors import BookingError

    if isinstance(error, BookingError):
        return {"problem": error.code, "detail": error.detail}
    return {"problem": "redis-unreachable", "detail": first_line(error)}


async def audited(
    session: AsyncSession,
    work: Callable[[], Awaitable[R]],
    *,
    action: str,
    target_type: str,
    target_id: str | None,
    details: Callable[[R], Mapping[str, Any]],
) -> R:
    """Do ``work`` and commit it with its audit row (``details`` of its result; a
    ``target_id`` among them names the target better than the one asked for).

    When the system refuses it (a ``BookingError``), or Redis does not answer for a change
    kept there, what ``work`` did in the session is rolled back, a ``failed`` row naming why
    is committed, and the error is raised again."""
    from booking.errors import BookingError
    from booking.ops.models import Outcome

    try:
        result = await work()
    except Exception as error:
        if not (isinstance(error, BookingError) or is_redis_error(error)):
            raise
        await session.rollback()
        await record(
            session,
            action=action,
            outcome=Outcome.FAILED,
            target_type=target_type,
            target_id=target_id,
            details=_problem(error),
        )
        raise
    facts = dict(details(result))
    named = facts.pop("target_id", target_id)
    await record(
        session,
        action=action,
        outcome=Outcome.OK,
        target_type=target_type,
        target_id=None if named is None else str(named),
        details=facts,
    )
    return result


# -- output -------------------------------------------------------------------------------


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


class Kind(enum.Enum):
    ID = "id"  # copied into the next command: never cut, never wrapped
    TEXT = "text"  # short values: wrap onto more lines when space is short
    PROSE = "prose"  # titles, names, messages: wrap, and cut a long word with an ellipsis


ID, TEXT, PROSE = Kind.ID, Kind.TEXT, Kind.PROSE


class Column(NamedTuple):
    """One column of a table for people: the row's key, its heading, and how it may give way."""

    key: str
    heading: str
    kind: Kind = TEXT


# A wrapping column is not squeezed narrower than this (or its heading, or its widest value
# when that is less); a table that cannot give each one that much leaves columns out.
MIN_WRAP_WIDTH = 6


def show(
    rows: Sequence[T],
    columns: Sequence[Column],
    *,
    as_json: bool,
    title: str,
    empty: str,
    display: Callable[[T], Mapping[str, Any]] | None = None,
    empty_is_nothing: bool = False,
) -> None:
    """Rows for scripts or for people.

    With ``--json``: ``{"items": [...]}`` with every field of every row. Otherwise a table of
    ``display(row)`` (the row itself without one), one column per ``columns`` entry, that
    never cuts an ``ID`` column (see the module's docstring). No rows: ``empty`` on stdout,
    exit 0, or exit 3 (``nothing``) when ``empty_is_nothing``."""
    if not rows:
        if empty_is_nothing:
            nothing(empty, as_json, {"items": []})
        if as_json:
            print_json({"items": []})
        else:
            say(empty)
        return
    if as_json:
        print_json({"items": [plain(row) for row in rows]})
        return
    shown = [plain(display(row) if display is not None else row) for row in rows]
    table(
        title,
        columns,
        [["" if item.get(c.key) is None else str(item.get(c.key)) for c in columns] for item in shown],
    )


def _framed_width(widths: Sequence[int]) -> int:
    # Rich's default table: one space of padding either side of a cell, a rule between and
    # around the columns.
    return sum(widths) + 2 * len(widths) + len(widths) + 1


def _output_width() -> int | None:
    """How wide to draw: the terminal's, or ``COLUMNS``; None (as wide as needed) for output
    to a file or a pipe, read by scripts and by people who copy from it."""
    if out.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return out.width
    return None


def table(title: str, columns: Sequence[Column], cells: Sequence[Sequence[str]]) -> None:
    """Draw ``cells`` (one list of strings a row, in the order of ``columns``) as a table whose
    ``ID`` columns are whole on every row, at any width."""
    natural = [
        max([cell_len(column.heading), *(cell_len(line) for row in cells for line in row[i].splitlines())])
        for i, column in enumerate(columns)
    ]
    least = [
        width if column.kind is ID else min(width, max(MIN_WRAP_WIDTH, cell_len(column.heading)))
        for width, column in zip(natural, columns, strict=True)
    ]
    limit = _output_width()
    kept = list(range(len(columns)))
    if limit is not None:
        while _framed_width([least[i] for i in kept]) > limit:
            others = [i for i in kept if columns[i].kind is not ID]
            if not others:
                break
            kept.remove(others[-1])  # the last columns say the least
    wrapping = [i for i in range(len(columns)) if columns[i].kind is not ID]
    wrapping_kept = [i for i in kept if columns[i].kind is not ID]
    if limit is not None and (
        _framed_width([least[i] for i in kept]) > limit or len(wrapping_kept) * 2 < len(wrapping)
    ):
        _records(title, columns, cells)
        return
    drawn = Table(title=title, title_justify="left")
    for i in kept:
        column = columns[i]
        if column.kind is ID:
            drawn.add_column(column.heading, no_wrap=True, min_width=natural[i], overflow="fold")
        else:
            drawn.add_column(column.heading, overflow="ellipsis" if column.kind is PROSE else "fold")
    for row in cells:
        drawn.add_row(*(Text(row[i]) for i in kept))
    if limit is None:
        # Rich never draws wider than its console: this one is as wide as the table.
        Console(width=_framed_width(natural), highlight=False).print(drawn)
    else:
        out.print(drawn)
    left_out = [columns[i].heading for i in range(len(columns)) if i not in kept]
    if left_out:
        err.print(
            f"(too narrow for {', '.join(left_out)}: widen the terminal, or use --json)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _records(title: str, columns: Sequence[Column], cells: Sequence[Sequence[str]]) -> None:
    """Each row as ``heading: value`` lines, a blank line between rows: for a terminal too
    narrow for a table that keeps its ids whole."""
    say(title)
    for row in cells:
        say("")
        for column, value in zip(columns, row, strict=True):
            say(f"{column.heading}: {value}")
