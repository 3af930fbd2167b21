"""Ids are never cut: whatever the width (40, 80 or 200 columns, or output to a pipe with no
width at all), every id a command prints appears whole, on one line, ready to paste into the
next command. Other columns wrap, then give way, then the rows become lines of
``heading: value``.

First the shared table itself, with made-up rows; then the real commands (``holds list``,
``jobs failed``, ``holds release``) on the test database and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from typer.testing import CliRunner

from booking.db import engine_scope, make_sessionmaker
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.settings import get_settings
from console.cli import app
from console.cli_common import ID, PROSE, Column, table
from jobs import admin
from tests.factories import make_event, make_fan

WIDTHS = [40, 80, 200]
runner = CliRunner()

COLUMNS = [
    Column("hold", "Hold", ID),
    Column("event", "Event", PROSE),
    Column("owner", "Owner"),
    Column("state", "State"),
    Column("total", "Total"),
    Column("expires", "Expires"),
    Column("job", "Job", ID),
]


def _rows() -> list[list[str]]:
    return [
        [
            str(uuid.uuid4()),
            "The Marvellous Symphony Orchestra plays Mahler's Second, with choir " * (n + 1),
            f"fan-{n}@example.org",
            "active",
            "120.00 EUR",
            "2026-12-03 13:37:23 UTC",
            f"mail-{uuid.uuid4().hex}-{n}",
        ]
        for n in range(3)
    ]


def _draw(
    width: int | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[list[list[str]], str, str]:
    """Made-up rows drawn at ``width`` columns (None: output to a pipe): (rows, stdout, stderr)."""
    if width is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", str(width))
    rows = _rows()
    table("Holds", COLUMNS, rows)
    captured = capsys.readouterr()
    return rows, captured.out, captured.err


@pytest.mark.parametrize("width", WIDTHS)
def test_the_table_keeps_every_id_whole_at_any_width(
    width: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, drawn, _ = _draw(width, monkeypatch, capsys)
    for row in rows:
        assert row[0] in drawn
        assert row[6] in drawn
    if "┃" in drawn:  # drawn as a table, it fits the width
        assert max(len(line) for line in drawn.splitlines()) <= width


def test_a_wide_terminal_shows_every_column(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, drawn, told = _draw(400, monkeypatch, capsys)
    assert all(column.heading in drawn for column in COLUMNS)
    assert told == ""


def test_a_narrow_terminal_leaves_the_last_columns_out_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, drawn, told = _draw(120, monkeypatch, capsys)
    assert "┃ Hold" in drawn
    assert "too narrow for" in told
    assert "use --json" in told
    for row in rows:
        assert row[0] in drawn
        assert row[6] in drawn


def test_a_terminal_too_narrow_for_a_table_gets_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, drawn, _ = _draw(40, monkeypatch, capsys)
    lines = drawn.splitlines()
    assert f"Hold: {rows[0][0]}" in lines
    assert f"Job: {rows[2][6]}" in lines
    assert f"Owner: {rows[1][2]}" in lines


def test_output_to_a_pipe_is_as_wide_as_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, drawn, _ = _draw(None, monkeypatch, capsys)
    # One line a row, every cell whole: what grep and cut expect.
    for row in rows:
        (line,) = [line for line in drawn.splitlines() if row[0] in line]
        assert all(cell in line for cell in row)


# --- the commands ----------------------------------------------------------------------


@pytest.fixture
def env(database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", redis_url)
    monkeypatch.setenv("BOXOFFICE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


async def _three_holds(url: str) -> list[str]:
    async with engine_scope(url) as engine, make_sessionmaker(engine)() as session:
        event = await make_event(session, seats=6)
        held = []
        for seat in event.seat_ids[:3]:
            owner = Owner(fan_id=await make_fan(session, f"someone-with-a-long-name-{seat}@example.org"))
            view = await holds.create_hold(
                session,
                owner=owner,
                event_id=event.event_id,
                selection=SeatSelection((seat,)),
                policy=HoldPolicy(),
            )
            await session.commit()
            held.append(str(view.id))
        return held


def _at(width: int, *args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_holds_list_keeps_hold_ids_whole(env: str) -> None:
    held = asyncio.run(_three_holds(env))
    listed = [item["hold_id"] for item in json.loads(_at(80, "holds", "list", "--json"))["items"]]
    assert sorted(listed) == sorted(held)
    for width in WIDTHS:
        drawn = _at(width, "holds", "list")
        for hold_id in held:
            assert hold_id in drawn, f"hold {hold_id} cut at {width} columns:\n{drawn}"


def test_jobs_failed_keeps_job_ids_whole(env: str, redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        ids = [f"expire-{uuid.uuid4()}-{n}" for n in range(2)]
        for job_id in ids:
            Queue("holds", connection=client).enqueue("jobs.holds.expire_hold", "not-a-uuid", job_id=job_id)
        assert admin.drain(client, "holds").failed == 2
    finally:
        client.close()
    for width in WIDTHS:
        drawn = _at(width, "jobs", "failed")
        for job_id in ids:
            assert job_id in drawn, f"job {job_id} cut at {width} columns:\n{drawn}"


def test_a_message_naming_an_id_keeps_it_whole(env: str) -> None:
    (hold_id, *_) = asyncio.run(_three_holds(env))
    released = _at(40, "holds", "release", hold_id, "--yes")
    assert f"released hold {hold_id}" in released
