"""`boxoffice catalog validate | import | export | venues` against the test database: exit
codes (0 done, 1 refused, 2 bad usage or an invalid file, 3 nothing changed), `--json`, what
the database holds after, and the audit rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import Result as CliResult
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from booking.catalog.layouts import example_layouts
from booking.db import engine_scope, make_sessionmaker
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.ops import audit
from booking.settings import get_settings
from console.cli import app
from tests.console.test_cli_startup import HEAVY
from tests.console.test_cli_startup import boxoffice as boxoffice_process
from tests.factories import make_fan
from tests.integration.test_layouts import BROKEN, SMALL, event_on, seat_id

runner = CliRunner()
T = TypeVar("T")


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", redis_url)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


@pytest.fixture
def hall(tmp_path: Path) -> Path:
    path = tmp_path / "hall.yaml"
    path.write_text(SMALL)
    return path


def boxoffice(*args: str) -> CliResult:
    return runner.invoke(app, ["catalog", *args])


def db(url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        async with engine_scope(url) as engine, make_sessionmaker(engine)() as session:
            return await work(session)

    return asyncio.run(run())


def scalar(url: str, sql: str) -> Any:
    async def read(session: AsyncSession) -> Any:
        return await session.scalar(text(sql))

    return db(url, read)


def audit_rows(url: str) -> list[audit.AuditView]:
    async def read(session: AsyncSession) -> list[audit.AuditView]:
        return await audit.tail(session, limit=20, action="layout.import")

    return db(url, read)


def test_validate_a_good_file_needs_no_database(hall: Path) -> None:
    result = boxoffice("validate", str(hall))
    assert result.exit_code == 0, result.output
    assert f"{hall}: valid. Test Hall (test-hall), layout Main" in result.stdout
    assert "30 seats, 100 GA places; 130 places in all (1 accessible, 1 companion" in result.stdout
    result = boxoffice("validate", "--json", str(hall))
    assert result.exit_code == 0
    facts = json.loads(result.stdout)
    assert facts["valid"] is True
    assert (facts["seats"], facts["ga_places"], facts["places"], facts["rows"]) == (30, 100, 130, 3)


@pytest.mark.parametrize("path", example_layouts(), ids=lambda path: path.stem)
def test_validate_the_shipped_examples(path: Path) -> None:
    result = boxoffice("validate", "--json", str(path))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["places"] in (2000, 20000)


def test_validate_loads_no_database_or_server_stack(hall: Path) -> None:
    code, out, imported = boxoffice_process("catalog", "validate", str(hall))
    assert code == 0
    assert "valid" in out
    assert imported & HEAVY == set()


def test_validate_a_broken_file_exits_2_naming_each_line() -> None:
    path = BROKEN / "duplicate_seat.yaml"
    result = boxoffice("validate", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"boxoffice: {path} is not a valid layout file (1 problem):" in result.stderr
    assert f"{path}:15: seat 5 appears twice in row A" in result.stderr
    assert "Traceback" not in result.output
    result = boxoffice("validate", "--json", str(path))
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "valid": False,
        "problems": [
            {"file": str(path), "line": 15, "message": "seat 5 appears twice in row A of section 'Stalls'"}
        ],
    }


def test_validate_a_missing_file_is_bad_usage(tmp_path: Path) -> None:
    result = boxoffice("validate", str(tmp_path / "nowhere.yaml"))
    assert result.exit_code == 2
    assert "cannot read the file" in result.stderr


def test_import_then_again_changes_nothing_and_is_audited_once(env: str, hall: Path) -> None:
    first = boxoffice("import", str(hall))
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("test-hall, layout Main: sections 1 added; rows 3 added; seats 30 added;")
    assert "  venue test-hall: created" in first.stdout
    assert "  GA area Floor: added (100 places)" in first.stdout
    seats = scalar(env, "SELECT count(*) FROM seats")
    assert seats == 30
    again = boxoffice("import", str(hall))
    assert again.exit_code == 3, again.output
    assert "test-hall, layout Main: nothing changed" in again.stdout
    assert scalar(env, "SELECT count(*) FROM seats") == seats
    as_json = boxoffice("import", "--json", str(hall))
    assert as_json.exit_code == 3
    payload = json.loads(as_json.stdout)
    assert payload["changed"] is False
    assert payload["places"] == 130
    (row,) = audit_rows(env)
    assert (row.actor_type, row.outcome, row.target_type, row.target_id) == (
        "cli",
        "ok",
        "venue",
        "test-hall",
    )
    assert row.details["venue_change"] == "created"
    assert row.details["counts"]["seats"]["added"] == 30
    assert row.details["file"] == "hall.yaml"


def test_a_dry_run_changes_nothing_and_is_not_audited(env: str, hall: Path) -> None:
    result = boxoffice("import", "--dry-run", "--json", str(hall))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["dry_run"], payload["changed"], payload["venue_id"]) == (True, True, None)
    assert scalar(env, "SELECT count(*) FROM venues") == 0
    assert audit_rows(env) == []
    text_run = boxoffice("import", "--dry-run", str(hall))
    assert text_run.stdout.startswith("dry run, nothing was changed: test-hall, layout Main would change:")


def test_an_import_that_would_drop_a_held_seat_exits_1_and_leaves_a_failed_row(
    env: str, hall: Path, tmp_path: Path
) -> None:
    assert boxoffice("import", str(hall)).exit_code == 0

    async def hold_a3(session: AsyncSession) -> str:
        event_id, slug = await event_on(session, "test-hall")
        owner = Owner(fan_id=await make_fan(session))
        await holds.create_hold(
            session,
            owner=owner,
            event_id=event_id,
            selection=SeatSelection((await seat_id(session, "A", "3"),)),
            policy=HoldPolicy(),
        )
        await session.commit()
        return slug

    slug = db(env, hold_a3)
    shorter = tmp_path / "shorter.yaml"
    shorter.write_text(
        SMALL.replace("labels: A-B\n        seats: 1-10", "labels: A-B\n        seats: 1-2, 4-10")
    )
    result = boxoffice("import", str(shorter))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"boxoffice: {shorter}: The layout change would remove places")
    assert f"Stalls row A seat 3 (held at {slug})" in result.stderr
    assert scalar(env, "SELECT count(*) FROM seats") == 30
    failed, ok = audit_rows(env)
    assert (failed.outcome, ok.outcome) == ("failed", "ok")
    assert failed.details["problem"] == "layout-change-refused"
    assert failed.details["places"] == [f"Stalls row A seat 3 (held at {slug})"]


def test_an_invalid_file_is_refused_before_the_database(env: str) -> None:
    result = boxoffice("import", str(BROKEN / "unknown_tier.yaml"))
    assert result.exit_code == 2
    assert "unknown_tier.yaml:17: unknown tier 'Premum'" in result.stderr
    assert scalar(env, "SELECT count(*) FROM venues") == 0


@pytest.mark.parametrize("as_json", [False, True], ids=["yaml", "json"])
def test_export_then_import_is_nothing_to_do(env: str, hall: Path, tmp_path: Path, as_json: bool) -> None:
    assert boxoffice("import", str(hall)).exit_code == 0
    args = ["--json"] if as_json else []
    exported = boxoffice("export", "test-hall", *args)
    assert exported.exit_code == 0, exported.output
    path = tmp_path / ("back.json" if as_json else "back.yaml")
    path.write_text(exported.stdout)
    if as_json:
        assert json.loads(exported.stdout)["venue"]["slug"] == "test-hall"
    else:
        assert exported.stdout.startswith("# A Boxoffice venue layout")
    again = boxoffice("import", str(path))
    assert again.exit_code == 3, again.output


def test_export_to_a_file_asks_before_overwriting(env: str, hall: Path, tmp_path: Path) -> None:
    assert boxoffice("import", str(hall)).exit_code == 0
    target = tmp_path / "out.yaml"
    result = boxoffice("export", "test-hall", "--output", str(target))
    assert (result.exit_code, result.stdout.strip()) == (0, f"wrote {target}")
    assert "labels: A-B" in target.read_text()
    target.write_text("mine")
    refused = boxoffice("export", "test-hall", "-o", str(target))
    assert refused.exit_code == 2
    assert "refusing without --yes" in refused.stderr
    assert target.read_text() == "mine"
    assert boxoffice("export", "test-hall", "-o", str(target), "--yes").exit_code == 0
    assert target.read_text().startswith("# A Boxoffice venue layout")


def test_export_of_an_unknown_venue_or_layout_exits_1(env: str, hall: Path) -> None:
    result = boxoffice("export", "nowhere")
    assert result.exit_code == 1
    assert "There is no venue 'nowhere'" in result.stderr
    assert boxoffice("import", str(hall)).exit_code == 0
    result = boxoffice("export", "test-hall", "--layout", "Other")
    assert result.exit_code == 1
    assert "Venue test-hall has no layout 'Other' (it has: Main)" in result.stderr


def test_venues_lists_every_layout(env: str, hall: Path) -> None:
    empty = boxoffice("venues")
    assert (empty.exit_code, empty.stdout.strip()) == (
        0,
        "No venues yet: `boxoffice catalog import FILE` adds one.",
    )
    assert boxoffice("import", str(hall)).exit_code == 0
    result = boxoffice("venues", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["items"] == [
        {
            "venue": "test-hall",
            "venue_name": "Test Hall",
            "city": "Testville",
            "layout": "Main",
            "seats": 30,
            "ga_places": 100,
            "places": 130,
            "events": 0,
        }
    ]
    table = boxoffice("venues")
    assert "test-hall" in table.stdout
    assert "130" in table.stdout
