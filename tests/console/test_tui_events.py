"""The console's Events screen, driven with Pilot at a till's 80x24 and a laptop's 120x40,
against a real API on loopback: an admin creates an event from a venue, prices it, sets its
on-sale times and puts it on sale; pauses and resumes it; and cancels one with paid orders,
the question saying how many will be refunded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select, Static

from booking.accounts.models import StaffRole
from booking.accounts.staff import create_key
from booking.catalog import admin
from booking.db import make_async_engine, make_sessionmaker
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner
from booking.orders.service import confirm_hold
from booking.settings import Settings
from console.tui.app import ConsoleApp
from console.tui.client import StaffClient
from console.tui.events import EventsScreen, FieldsModal, NewEventModal
from console.tui.modals import ConfirmModal
from tests.catalog_data import make_arena, new_event
from tests.console.snapshot import visible_text
from tests.console.test_tui import until
from tests.factories import make_fan
from tests.live_api import LiveApi

SIZES = [(80, 24), (120, 40)]
REFRESH = 0.3
POLICY = HoldPolicy()


@dataclass(frozen=True)
class Office:
    api: LiveApi
    key: str
    venue_slug: str
    sold_event: uuid.UUID


async def _prepare(url: str) -> tuple[str, str, uuid.UUID]:
    """A small arena, an admin key, and one event on sale there with two paid orders."""
    engine = make_async_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            arena = await make_arena(session, sections=2, rows=1, seats_per_row=5, standing=10)
            event_id = await admin.create_event(
                session, new_event(arena, title="Sold Night", slug="sold-night"), limits=POLICY
            )
            await admin.put_on_sale(session, event_id)
            await session.commit()
            view = await admin.get_event(session, event_id)
            floor = next(t.id for t in view.tiers if t.kind == "ga")
            for _ in range(2):
                hold = await holds.create_hold(
                    session,
                    owner=Owner(fan_id=await make_fan(session)),
                    event_id=event_id,
                    selection=GASelection(floor, 1),
                    policy=POLICY,
                )
                await confirm_hold(session, hold_id=hold.id)
                await session.commit()
            issued = await create_key(session, "organiser", StaffRole.ADMIN)
            await session.commit()
            return issued.secret, arena.slug, event_id
    finally:
        await engine.dispose()


@pytest.fixture
def office(settings: Settings) -> Iterator[Office]:
    assert settings.database_url is not None
    key, venue, sold = asyncio.run(_prepare(settings.database_url))
    api = LiveApi(settings)
    api.start()
    try:
        yield Office(api, key, venue, sold)
    finally:
        api.stop()


def _console(office: Office, tmp_path: Path) -> ConsoleApp:
    return ConsoleApp(StaffClient(office.api.url, office.key), refresh_seconds=REFRESH, tickets_dir=tmp_path)


async def _events(pilot: Pilot[None], app: ConsoleApp) -> tuple[EventsScreen, DataTable[object]]:
    await pilot.press("v")
    screen = app.screen
    assert isinstance(screen, EventsScreen)
    table = screen.query_one("#event-rows", DataTable)
    await until(pilot, lambda: table.row_count > 0, "the events")
    return screen, table


def _phase(table: DataTable[object], title: str) -> str | None:
    for key in table.rows:
        row = table.get_row(key)
        if row[0] == title:
            return str(row[2])
    return None


async def _select(pilot: Pilot[None], table: DataTable[object], screen: EventsScreen, title: str) -> None:
    await until(pilot, lambda: _phase(table, title) is not None, f"{title} listed")
    index = next(i for i, key in enumerate(table.rows) if table.get_row(key)[0] == title)
    table.move_cursor(row=index)
    await until(
        pilot, lambda: screen.detail is not None and screen.detail["title"] == title, f"{title}'s detail"
    )


@pytest.mark.parametrize(("width", "height"), SIZES)
async def test_an_admin_creates_an_event_from_a_venue_prices_it_and_puts_it_on_sale(
    office: Office, tmp_path: Path, width: int, height: int
) -> None:
    app = _console(office, tmp_path)
    async with app.run_test(size=(width, height)) as pilot:
        screen, table = await _events(pilot, app)

        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewEventModal), "the new-event form")
        form = app.screen
        assert isinstance(form, NewEventModal)
        (layout_key,) = [k for k in form.layouts if k.startswith(office.venue_slug)]
        form.query_one("#layout", Select).value = layout_key
        tiers = form.query_one("#tiers", Input)
        await until(pilot, lambda: tiers.value != "", "the tiers suggested from the layout")
        assert tiers.value == "Block 1=0@Block 1; Block 2=0@Block 2; Standing Floor=0@ga:Standing Floor"
        await pilot.press("enter")  # refused: nothing typed yet, the form stays
        assert app.screen is form
        assert "give the title" in str(form.query_one("#hint", Static).render())
        for ident, value in (
            ("title", "Console Night"),
            ("performer", "The Operators"),
            ("starts", "2031-08-01T20:00"),
            ("onsale", "2031-05-01T10:00"),
            ("currency", "GBP"),
        ):
            form.query_one(f"#{ident}", Input).value = value
        tiers.value = "Front=60@Block 1; Back=40@Block 2; Floor=25@ga:Standing Floor"
        await pilot.press("enter")
        await until(pilot, lambda: _phase(table, "Console Night") == "draft", "the draft listed")
        await _select(pilot, table, screen, "Console Night")
        assert screen.detail is not None
        assert [t["price"]["amount_minor"] for t in screen.detail["tiers"]] == [6000, 4000, 2500]

        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, FieldsModal), "the prices form")
        prices = app.screen.query_one("#prices", Input)
        assert prices.value == "Front=60.00; Back=40.00; Floor=25.00"
        prices.value = "Floor=27.50"
        await pilot.press("enter")
        await until(
            pilot,
            lambda: screen.detail is not None and screen.detail["tiers"][2]["price"]["amount_minor"] == 2750,
            "the new price",
        )

        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, FieldsModal), "the on-sale times form")
        times = app.screen
        assert times.query_one("#opens", Input).value == "2031-05-01T10:00"
        assert times.query_one("#closes", Input).value == "2031-08-01T20:00"
        times.query_one("#opens", Input).value = "2026-01-01T10:00"
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (
                screen.detail is not None and screen.detail["onsale_starts_at"].startswith("2026-01-01T10:00")
            ),
            "the sale's new opening",
        )

        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the on-sale question")
        await pilot.press("y")
        await until(pilot, lambda: _phase(table, "Console Night") == "on sale", "the event on sale")
        drawn = visible_text(app.export_screenshot())
        assert "Console Night" in drawn
        assert "Floor: 27.50 GBP" in drawn


@pytest.mark.parametrize(("width", "height"), SIZES)
async def test_pausing_and_cancelling_say_what_they_do(
    office: Office, tmp_path: Path, settings: Settings, width: int, height: int
) -> None:
    app = _console(office, tmp_path)
    async with app.run_test(size=(width, height)) as pilot:
        screen, table = await _events(pilot, app)
        await _select(pilot, table, screen, "Sold Night")

        await pilot.press("z")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the pause question")
        await pilot.press("y")
        await until(pilot, lambda: _phase(table, "Sold Night") == "paused", "the sale paused")
        await pilot.press("u")
        await until(pilot, lambda: _phase(table, "Sold Night") == "on sale", "the sale resumed")

        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the cancel question")
        question = app.screen
        assert isinstance(question, ConfirmModal)
        assert "2 paid orders will be refunded in full and their fans emailed" in question.question
        await pilot.press("n")  # not now: nothing happens
        await pilot.pause(REFRESH * 2)
        assert _phase(table, "Sold Night") == "on sale"

        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the cancel question again")
        await pilot.press("y")
        await until(pilot, lambda: _phase(table, "Sold Night") == "cancelled", "the event cancelled")

    engine = make_async_engine(settings.database_url or "")
    try:
        async with make_sessionmaker(engine)() as session:
            facts = await session.scalar(
                text("SELECT count(*) FROM outbox WHERE topic = 'event.cancelled' AND catalog_event_id = :e"),
                {"e": office.sold_event},
            )
            assert facts == 1
    finally:
        await engine.dispose()
