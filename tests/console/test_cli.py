from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from booking import __version__
from console.cli import app

runner = CliRunner()


@pytest.fixture
def env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    return database_url


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"boxoffice {__version__}"


def test_db_upgrade_on_an_empty_database(empty_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", empty_database_url)
    assert runner.invoke(app, ["db", "current"]).output.strip() == "empty (no migrations applied)"
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("database at revision ")
    assert runner.invoke(app, ["db", "current"]).output.strip() == result.output.split()[-1]


def test_demo_load_twice(env: str) -> None:
    first = runner.invoke(app, ["demo", "load"])
    assert first.exit_code == 0, first.output
    assert "loaded 6 venues, 14 events" in first.output
    second = runner.invoke(app, ["demo", "load"])
    assert second.exit_code == 0
    assert "already loaded; nothing changed" in second.output


def test_an_unreachable_database_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 1
    assert result.output.startswith("boxoffice: cannot reach the database")
    assert "Traceback" not in result.output


def test_serve_without_servers_or_stack_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOXOFFICE_DATABASE_URL", "BOXOFFICE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "boxoffice up" in result.output


def test_unknown_command_is_usage_error() -> None:
    assert runner.invoke(app, ["sell-everything"]).exit_code == 2
