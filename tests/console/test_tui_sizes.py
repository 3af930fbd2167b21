"""The operator console at the sizes tills and laptops have (80x24, 120x40, 200x60), driven
with Pilot against a real API on loopback (real PostgreSQL and Redis behind it):

- the dashboard says when a sale that has not opened yet opens, at the event's own clock;
- the box office's GA panel shows each tier whole, its price and what is left, beside the
  seat grid;
- a key typed the moment a dialog closes with Escape is acted on, not lost in the dialog.

Each compares an SVG snapshot too (``tests/console/snapshot.py``). The data is fixed for
that: named events on far-off fixed dates, and no demo data."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from textual import events
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.db import make_async_engine, make_sessionmaker
from booking.settings import Settings
from console.tui.app import ConsoleApp
from console.tui.box_office import BoxOfficeScreen
from console.tui.client import StaffClient
from console.tui.modals import AskModal, CashModal, ConfirmModal
from tests.console.snapshot import assert_snapshot, visible_text
from tests.console.test_tui import until
from tests.factories import make_event
from tests.live_api import LiveApi

SIZES = [(80, 24), (120, 40), (200, 60)]
REFRESH = 0.3
OPEN_SINCE = dt.datetime(2020, 1, 1, 9, tzinfo=dt.UTC)
OPENS = dt.datetime(2099, 6, 1, 18, tzinfo=dt.UTC)
# 18:00 UTC is 19:00 in London in June (British Summer Time): the events are in London.
OPENS_AT_THE_EVENT = "opens at 2099-06-01 19:00 BST"
GA_LEFT = 997


@dataclass(frozen=True)
class Till:
    api: LiveApi
    key: str
    on_sale: uuid.UUID
    upcoming: uuid.UUID


async def _prepare(url: str) -> tuple[str, uuid.UUID, uuid.UUID]:
    """Two events: one on sale now, with a row of 40 seats (wider than a small terminal) and
    a standing area of 997; one whose sale opens in 2099. And an admin key."""
    engine = make_async_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            on_sale = await make_event(session, seats=40, ga_capacity=GA_LEFT)
            upcoming = await make_event(session, seats=4, ga_capacity=10)
            fixed = text(
                "UPDATE events SET title = :title, starts_at = :starts, ends_at = :ends,"
                " onsale_starts_at = :opens, onsale_ends_at = :starts WHERE id = :id"
            )
            for event_id, title, starts, opens in (
                (on_sale.event_id, "Snapshot Night", dt.datetime(2099, 7, 1, 18, tzinfo=dt.UTC), OPEN_SINCE),
                (upcoming.event_id, "Future Sale", dt.datetime(2099, 7, 2, 18, tzinfo=dt.UTC), OPENS),
            ):
                ends = starts + dt.timedelta(hours=3)
                await session.execute(
                    fixed, {"id": event_id, "title": title, "starts": starts, "ends": ends, "opens": opens}
                )
            await session.execute(
                text("UPDATE ga_areas SET name = 'Standing Floor' WHERE id = :id"), {"id": on_sale.ga_area_id}
            )
            issued = await create_key(session, "sizes", StaffRole.ADMIN)
            await session.commit()
            return issued.secret, on_sale.event_id, upcoming.event_id
    finally:
        await engine.dispose()


@pytest.fixture
def till(settings: Settings) -> Iterator[Till]:
    assert settings.database_url is not None
    key, on_sale, upcoming = asyncio.run(_prepare(settings.database_url))
    api = LiveApi(settings)
    api.start()
    try:
        yield Till(api, key, on_sale, upcoming)
    finally:
        api.stop()


def _console(till: Till, tmp_path: Path) -> ConsoleApp:
    return ConsoleApp(
        StaffClient(till.api.url, till.key), refresh_seconds=REFRESH, tickets_dir=tmp_path / "tickets"
    )


def _showing(app: ConsoleApp, kind: type[Screen[Any]]) -> Callable[[], bool]:
    return lambda: isinstance(app.screen, kind)


def _keys_at_once(app: ConsoleApp, *keys: tuple[str, str | None]) -> None:
    """Keys as a terminal delivers them when typed fast: one after the other into the app's
    queue, none waiting for the previous one to be handled (as Pilot's ``press`` does)."""
    for key, character in keys:
        app.post_message(events.Key(key, character))


async def _open_the_event(pilot: Pilot[None], app: ConsoleApp, event_id: uuid.UUID) -> BoxOfficeScreen:
    await pilot.press("b")
    screen = app.screen
    assert isinstance(screen, BoxOfficeScreen)
    listed = screen.query_one("#event-list", DataTable)
    await until(pilot, lambda: str(event_id) in {key.value for key in listed.rows}, "the event to sell")
    listed.move_cursor(row=listed.get_row_index(str(event_id)))
    await pilot.press("enter")
    ga = screen.query_one("#ga", DataTable)
    await until(pilot, lambda: len(screen.seats) == 40 and ga.row_count == 1, "the seat map and GA panel")
    await pilot.pause(REFRESH * 2)
    return screen


@pytest.mark.parametrize(("width", "height"), SIZES)
async def test_the_dashboard_says_when_a_sale_opens(
    till: Till, tmp_path: Path, width: int, height: int
) -> None:
    app = _console(till, tmp_path)
    async with app.run_test(size=(width, height)) as pilot:
        table = app.screen.query_one("#events", DataTable)
        await until(
            pilot,
            lambda: (
                str(till.upcoming) in {key.value for key in table.rows}
                and str(table.get_row(str(till.upcoming))[1]).startswith("opens")
            ),
            "the sale's opening",
        )
        assert table.get_row(str(till.upcoming))[1] == OPENS_AT_THE_EVENT
        assert table.get_row(str(till.on_sale))[1] == "on_sale"
        await pilot.pause(REFRESH * 2)
        svg = await assert_snapshot(pilot, f"dashboard-{width}x{height}", tmp_path)
    assert OPENS_AT_THE_EVENT in visible_text(svg)


@pytest.mark.parametrize(("width", "height"), SIZES)
async def test_the_ga_panel_is_whole_beside_the_seat_grid(
    till: Till, tmp_path: Path, width: int, height: int
) -> None:
    app = _console(till, tmp_path)
    async with app.run_test(size=(width, height)) as pilot:
        screen = await _open_the_event(pilot, app, till.on_sale)
        ga = screen.query_one("#ga", DataTable)
        seats = screen.query_one("#seats", DataTable)
        assert str(ga.get_row_at(0)[2]) == str(GA_LEFT)
        # Nothing of the panel is out of sight: it is as wide as its rows, and they fit.
        assert ga.max_scroll_x == 0
        assert ga.region.right <= seats.region.x or seats.region.right <= ga.region.x
        assert ga.region.right <= width
        # The seat grid keeps a part of the till, scrolling sideways where it must.
        assert seats.region.width >= 24
        svg = await assert_snapshot(pilot, f"box-office-{width}x{height}", tmp_path)
    drawn = visible_text(svg)
    assert "Left" in drawn
    assert f"Standing Floor · Standing  30.00 GBP  {GA_LEFT}" in drawn


@pytest.mark.parametrize(("width", "height"), SIZES)
async def test_a_key_right_after_escape_is_not_lost(
    till: Till, tmp_path: Path, width: int, height: int
) -> None:
    app = _console(till, tmp_path)
    async with app.run_test(size=(width, height)) as pilot:
        screen = await _open_the_event(pilot, app, till.on_sale)
        grid = screen.query_one("#seats", DataTable)
        grid.move_cursor(row=0, column=1)
        await pilot.press("space", "s")
        await until(pilot, lambda: screen.sale is not None, "the sale held")
        await pilot.pause(REFRESH * 2)

        # The GA quantity and the card reference ask in a dialog with an input; so does cash.
        for opener, dialog in (("c", CashModal), ("k", AskModal)):
            await pilot.press(opener)
            asked = app.screen
            assert isinstance(asked, dialog)
            typed_into = asked.query_one(Input)
            # Escape, then at once x (abandon the sale): the second key must reach the till.
            _keys_at_once(app, ("escape", "\x1b"), ("x", "x"))
            await until(pilot, _showing(app, ConfirmModal), "the abandon question")
            assert typed_into.value == ""
            if opener == "c":
                await assert_snapshot(pilot, f"after-escape-{width}x{height}", tmp_path)
            # n closes the question just as fast: the next key is the till's too.
            _keys_at_once(app, ("n", "n"), (opener, opener))
            await until(pilot, _showing(app, dialog), "the dialog opened again")
            _keys_at_once(app, ("escape", "\x1b"))
            await until(pilot, lambda: app.screen is screen, "the till")
        assert screen.sale is not None  # nothing was paid or abandoned on the way
