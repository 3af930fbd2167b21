"""The operator console driven with Textual's Pilot against a real API on loopback (real
PostgreSQL and Redis behind it)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from console.tui.app import ConsoleApp
from console.tui.base import Banner
from console.tui.box_office import BoxOfficeScreen, TicketsModal
from console.tui.client import StaffClient
from console.tui.holds import HoldsScreen
from console.tui.modals import CashModal, ConfirmModal
from console.tui.on_call import OnCallScreen
from tests.live_api import LiveApi

PASSWORD = "correct horse battery"
REFRESH = 0.3


async def until(pilot: Pilot[None], condition: Callable[[], bool], what: str, within: float = 20.0) -> None:
    """Let the console run until ``condition`` holds. The limit only bounds a failing test:
    nothing here asserts how fast the console is."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"the console never showed {what}"
        await pilot.pause(0.05)


def console(api: LiveApi, key: str, tmp_path: Path) -> ConsoleApp:
    return ConsoleApp(StaffClient(api.url, key), refresh_seconds=REFRESH, tickets_dir=tmp_path / "tickets")


def _free_seats(client: httpx.Client, event_id: str) -> list[int]:
    seatmap = client.get(f"/events/{event_id}/seatmap").json()
    return [
        seat["id"]
        for section in seatmap["sections"]
        for row in section["rows"]
        for seat in row["seats"]
        if seat["state"] == "available"
    ]


def _seated_event_on_sale(base: str) -> str:
    with httpx.Client(base_url=base) as client:
        for event in client.get("/events", params={"on_sale_now": "true", "limit": 50}).json()["items"]:
            if _free_seats(client, event["id"]):
                return str(event["id"])
    raise AssertionError("the demo has no seated event on sale")


def _hold_through_the_public_api(base: str, event_id: str) -> tuple[str, list[int]]:
    email = f"fan-{uuid.uuid4().hex[:8]}@example.org"
    with httpx.Client(base_url=base) as client:
        client.post("/fans", json={"email": email, "password": PASSWORD}).raise_for_status()
        token = client.post("/sessions", json={"email": email, "password": PASSWORD}).json()["token"]
        free = _free_seats(client, event_id)
        held = client.post(
            "/holds",
            json={"event_id": event_id, "seat_ids": free[:2]},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
        )
        assert held.status_code == 201, held.text
        return email, free[:2]


def _cell(table: DataTable[object], row_key: str, column: int) -> str:
    return str(table.get_row(row_key)[column])


async def test_the_dashboard_shows_a_hold_made_through_the_public_api(
    live_api: LiveApi, admin_key: str, tmp_path: Path
) -> None:
    app = console(live_api, admin_key, tmp_path)
    async with app.run_test(size=(160, 50)) as pilot:
        events = app.screen.query_one("#events", DataTable)
        seated = _seated_event_on_sale(live_api.url)
        await until(pilot, lambda: seated in {key.value for key in events.rows}, "the events on sale")
        held_before = int(_cell(events, seated, 4))

        _hold_through_the_public_api(live_api.url, seated)

        await until(pilot, lambda: int(_cell(events, seated, 4)) == held_before + 2, "the new hold")
        assert not app.screen.query_one(Banner).has_class("visible")


async def test_the_console_says_when_the_api_is_away_and_recovers_by_itself(
    live_api: LiveApi, admin_key: str, tmp_path: Path
) -> None:
    app = console(live_api, admin_key, tmp_path)
    async with app.run_test(size=(160, 50)) as pilot:
        events = app.screen.query_one("#events", DataTable)
        banner = app.screen.query_one(Banner)
        await until(pilot, lambda: events.row_count > 0, "the events on sale")

        live_api.stop()
        await until(pilot, lambda: banner.has_class("visible"), "the unreachable banner")
        assert "unreachable" in str(banner.render()).lower()
        assert events.row_count > 0  # the last picture stays on screen
        assert not app.reachable

        live_api.start()
        await until(pilot, lambda: not banner.has_class("visible"), "the banner gone")
        assert app.reachable


async def _open_event(pilot: Pilot[None], app: ConsoleApp, event_id: str) -> BoxOfficeScreen:
    await pilot.press("b")
    screen = app.screen
    assert isinstance(screen, BoxOfficeScreen)
    events = screen.query_one("#event-list", DataTable)
    await until(pilot, lambda: event_id in {key.value for key in events.rows}, "the events to sell")
    events.move_cursor(row=events.get_row_index(event_id))
    await pilot.press("enter")
    await until(pilot, lambda: len(screen.seats) > 0, "the seat map")
    return screen


async def _select_free_seats(pilot: Pilot[None], screen: BoxOfficeScreen, count: int) -> list[int]:
    grid = screen.query_one("#seats", DataTable)
    free = [(where, seat) for where, seat in screen.seats.items() if seat["state"] == "available"][:count]
    for where, _ in free:
        grid.move_cursor(row=where.row, column=where.column)
        await pilot.press("space")
    return [seat["id"] for _, seat in free]


def _states(base: str, key: str, event_id: str, seat_ids: list[int]) -> set[str]:
    """The seats' states now (the staff map is read live; the fans' map is a snapshot that
    the daemon refreshes, and no daemon runs here)."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        seatmap = client.get(f"/staff/events/{event_id}/seatmap").json()
    return {seat["state"] for seat in seatmap["seats"] if seat["id"] in seat_ids}


async def test_a_walk_up_sale_from_event_to_tickets(
    live_api: LiveApi, admin_key: str, tmp_path: Path
) -> None:
    event_id = _seated_event_on_sale(live_api.url)
    app = console(live_api, admin_key, tmp_path)
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await _open_event(pilot, app, event_id)
        seat_ids = await _select_free_seats(pilot, screen, 2)
        assert screen.selected == set(seat_ids)

        await pilot.press("s")
        await until(pilot, lambda: screen.sale is not None, "the sale held")
        assert screen.sale is not None
        total = screen.sale["total"]["amount_minor"]
        assert app.open_sales == {str(screen.sale["id"])}

        await pilot.press("c")
        cash = app.screen
        assert isinstance(cash, CashModal)
        tendered = total + 1000
        await pilot.press(*f"{tendered / 100:.2f}")
        assert "Change due 10.00" in str(cash.query_one("#change", Static).render())
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TicketsModal), "the tickets")

        tickets = app.screen
        assert isinstance(tickets, TicketsModal)
        assert "Change due: 10.00" in tickets.summary
        assert len(tickets.tickets) == 2
        for _, token, pdf in tickets.tickets:
            assert pdf.read_bytes().startswith(b"%PDF-")
            assert token.count(".") == 2
        assert app.open_sales == set()
        await pilot.press("enter")
    assert _states(live_api.url, admin_key, event_id, seat_ids) == {"sold"}


async def test_an_abandoned_sale_puts_its_seats_back(
    live_api: LiveApi, admin_key: str, tmp_path: Path
) -> None:
    event_id = _seated_event_on_sale(live_api.url)
    app = console(live_api, admin_key, tmp_path)
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await _open_event(pilot, app, event_id)
        seat_ids = await _select_free_seats(pilot, screen, 1)
        await pilot.press("s")
        await until(pilot, lambda: screen.sale is not None, "the sale held")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await until(pilot, lambda: screen.sale is None, "the sale abandoned")
        assert app.open_sales == set()
        await until(
            pilot, lambda: screen.seats[screen.positions[seat_ids[0]]]["state"] == "available", "a free seat"
        )


async def test_closing_the_console_releases_a_sale_left_open(
    live_api: LiveApi, admin_key: str, tmp_path: Path
) -> None:
    event_id = _seated_event_on_sale(live_api.url)
    app = console(live_api, admin_key, tmp_path)
    async with app.run_test(size=(180, 60)) as pilot:
        screen = await _open_event(pilot, app, event_id)
        seat_ids = await _select_free_seats(pilot, screen, 1)
        await pilot.press("s")
        await until(pilot, lambda: screen.sale is not None, "the sale held")
        await pilot.press("q")
    assert _states(live_api.url, admin_key, event_id, seat_ids) == {"available"}


async def test_releasing_a_fans_hold_from_the_holds_screen(
    live_api: LiveApi, admin_key: str, tmp_path: Path
) -> None:
    event_id = _seated_event_on_sale(live_api.url)
    email, seat_ids = _hold_through_the_public_api(live_api.url, event_id)
    app = console(live_api, admin_key, tmp_path)
    async with app.run_test(size=(180, 60)) as pilot:
        await pilot.press("h")
        screen = app.screen
        assert isinstance(screen, HoldsScreen)
        await pilot.press("slash", *email, "enter")
        holds = screen.query_one("#hold-list", DataTable)
        await until(pilot, lambda: holds.row_count == 1, "the fan's hold")
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await until(pilot, lambda: "released" in str(holds.get_row_at(0)[3]), "the hold released")
    assert _states(live_api.url, admin_key, event_id, seat_ids) == {"available"}


async def test_pausing_and_resuming_a_sale_from_the_on_call_screen(
    live_api: LiveApi, admin_key: str, tmp_path: Path
) -> None:
    event_id = _seated_event_on_sale(live_api.url)
    app = console(live_api, admin_key, tmp_path)
    async with app.run_test(size=(180, 60)) as pilot:
        await pilot.press("o")
        screen = app.screen
        assert isinstance(screen, OnCallScreen)
        sales = screen.query_one("#sales", DataTable)
        await until(pilot, lambda: event_id in {key.value for key in sales.rows}, "the sales")
        sales.focus()
        sales.move_cursor(row=sales.get_row_index(event_id))
        await pilot.press("p")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await until(pilot, lambda: sales.get_row(event_id)[1] == "paused", "the sale paused")
        await pilot.press("u")
        await until(pilot, lambda: sales.get_row(event_id)[1] == "on_sale", "the sale resumed")


async def test_a_till_sees_the_sales_without_the_on_call_parts(
    live_api: LiveApi, box_office_key: str, tmp_path: Path
) -> None:
    app = console(live_api, box_office_key, tmp_path)
    async with app.run_test(size=(160, 50)) as pilot:
        events = app.screen.query_one("#events", DataTable)
        await until(pilot, lambda: events.row_count > 0, "the events on sale")
        await pilot.pause(REFRESH * 3)
        assert not app.screen.query_one(Banner).has_class("visible")
        assert not app.screen.query_one("#queues", DataTable).display
        assert "on-call keys only" in str(app.screen.query_one("#workers", Static).render())


def _failed_refund(api: LiveApi, admin_key: str, event_id: str) -> str:
    """A fan's order bought and refunded by staff through the API, its refund then refused by
    the provider for good (as the refund job records it): the refund's id."""
    email = f"fan-{uuid.uuid4().hex[:8]}@example.org"
    staff = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=api.url) as client:
        client.post("/fans", json={"email": email, "password": PASSWORD}).raise_for_status()
        token = client.post("/sessions", json={"email": email, "password": PASSWORD}).json()["token"]
        fan = {"Authorization": f"Bearer {token}"}
        held = client.post(
            "/holds",
            json={"event_id": event_id, "seat_ids": _free_seats(client, event_id)[:1]},
            headers={**fan, "Idempotency-Key": uuid.uuid4().hex},
        ).json()
        paid = client.post(
            f"/holds/{held['id']}/checkout",
            json={"provider": "offline", "card_number": "4242424242424242"},
            headers=fan,
        ).json()
        client.post(f"/staff/orders/{paid['order_id']}/refund", headers=staff).raise_for_status()
    assert api.settings.database_url is not None
    with psycopg.connect(api.settings.database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        (refund_id,) = conn.execute(
            "UPDATE refunds SET state = 'failed', last_error = 'the provider answered card closed'"
            " WHERE payment_id = %s RETURNING id",
            (paid["payment_id"],),
        ).fetchone()  # type: ignore[misc]
    return str(refund_id)


async def test_retrying_a_failed_refund_from_the_on_call_screen(
    live_api: LiveApi, admin_key: str, tmp_path: Path
) -> None:
    event_id = _seated_event_on_sale(live_api.url)
    key = _failed_refund(live_api, admin_key, event_id)
    app = console(live_api, admin_key, tmp_path)
    async with app.run_test(size=(180, 70)) as pilot:
        await pilot.press("o")
        screen = app.screen
        assert isinstance(screen, OnCallScreen)
        refunds = screen.query_one("#refunds", DataTable)
        await until(pilot, lambda: key in {k.value for k in refunds.rows}, "the failed refund")
        assert _cell(refunds, key, 1) == "failed"
        refunds.focus()
        refunds.move_cursor(row=refunds.get_row_index(key))
        await pilot.press("t")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await until(
            pilot,
            lambda: key not in {k.value for k in refunds.rows} or _cell(refunds, key, 1) != "failed",
            "the refund retried",
        )


def _enable_room(base: str, key: str, event_id: str) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        answer = client.put(
            f"/staff/events/{event_id}/waiting-room", json={"enabled": True, "rate_per_minute": 120}
        )
        assert answer.status_code == 200, answer.text


async def test_a_waiting_room_on_the_dashboard_and_steered_from_the_on_call_screen(
    live_api: LiveApi, admin_key: str, tmp_path: Path
) -> None:
    event_id = _seated_event_on_sale(live_api.url)
    _enable_room(live_api.url, admin_key, event_id)
    app = console(live_api, admin_key, tmp_path)
    async with app.run_test(size=(180, 60)) as pilot:
        rooms = app.screen.query_one("#rooms", DataTable)
        await until(pilot, lambda: event_id in {key.value for key in rooms.rows}, "the waiting room")
        assert _cell(rooms, event_id, 1) == "admitting"
        assert _cell(rooms, event_id, 5) == "120"

        await pilot.press("o")
        screen = app.screen
        assert isinstance(screen, OnCallScreen)
        rooms = screen.query_one("#rooms", DataTable)
        await until(pilot, lambda: event_id in {key.value for key in rooms.rows}, "the on-call rooms")
        rooms.focus()
        rooms.move_cursor(row=rooms.get_row_index(event_id))
        await pilot.press("w")
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await until(pilot, lambda: _cell(rooms, event_id, 1) == "paused", "the room paused")
        await pilot.press("w")
        await until(pilot, lambda: _cell(rooms, event_id, 1) == "admitting", "the room admitting")

        await pilot.press("a")
        await pilot.press(*"600")
        await pilot.press("enter")
        await until(pilot, lambda: _cell(rooms, event_id, 5).startswith("600"), "the new rate")
