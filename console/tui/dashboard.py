"""Dashboard: what is selling, how fast, what is stuck, and whether the daemon keeps up."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from console.tui.base import ConsoleScreen
from console.tui.client import ApiProblem, Unreachable
from console.tui.format import at_the_event, money, when

# An event's on-sale window seldom changes: it is asked for again after this many seconds.
SALE_WINDOW_SECONDS = 60.0
WINDOW_FIELDS = ("onsale_starts_at", "onsale_ends_at", "timezone")


def _revenue(amounts: list[dict[str, Any]]) -> str:
    return ", ".join(money(a["amount_minor"], a["currency"]) for a in amounts) or "-"


def sale_status(status: str, window: dict[str, Any] | None, now: dt.datetime) -> str:
    """The Status column: an event ``on_sale`` whose on-sale window has not opened yet
    ``opens at`` its opening (the wall clock where the event is), one whose window has
    closed ``closed at`` its closing; any other status, or an unknown window, as it is."""
    if status != "on_sale" or window is None:
        return status
    if now < dt.datetime.fromisoformat(window["onsale_starts_at"]):
        return f"opens at {at_the_event(window['onsale_starts_at'], window['timezone'])}"
    if now >= dt.datetime.fromisoformat(window["onsale_ends_at"]):
        return f"closed at {at_the_event(window['onsale_ends_at'], window['timezone'])}"
    return status


ROOM_COLUMNS = ("Event", "Room", "Waiting", "Shopping", "Admitted", "Rate/min", "Last in")


def room_state(room: dict[str, Any], now: dt.datetime) -> str:
    """The Room column: what the room is doing now."""
    if not room["active"]:
        return "closed"
    if room["paused"]:
        return "paused"
    if room["sale_opens_at"] is not None and now < dt.datetime.fromisoformat(room["sale_opens_at"]):
        return f"draws at {when(room['sale_opens_at'])}"
    return "admitting"


def room_cells(room: dict[str, Any], title: str, now: dt.datetime) -> list[str]:
    """One waiting room's row: depth, fans shopping (of the most allowed), everyone admitted,
    the rate (measured over the last minute, and the setting), and when the last fan waiting
    now gets in. A room whose queue Redis could not read says so instead of a zero."""
    measured = room["measured_rate_per_minute"]
    rate = str(room["rate_per_minute"]) + ("" if measured is None else f" ({measured:.0f} now)")
    limit = room["max_shoppers"]
    eta = room["eta_seconds_for_last"]
    return [
        title[:40],
        room_state(room, now),
        str(room["waiting"]) if room["redis_ok"] else "? Redis away",
        str(room["shopping"]) + ("" if limit is None else f"/{limit}"),
        str(room["admitted_total"]),
        rate,
        "-" if eta is None or not room["waiting"] else f"{math.ceil(eta / 60)} min",
    ]


def show_rooms(
    table: DataTable[Any], rooms: list[dict[str, Any]] | None, titles: dict[str, str], now: dt.datetime
) -> None:
    """Fill ``table`` with the board's waiting rooms; hidden when there are none (or the API
    is older than waiting rooms)."""
    table.clear()
    table.display = bool(rooms)
    for room in rooms or []:
        event_id = str(room["event_id"])
        table.add_row(*room_cells(room, titles.get(event_id, event_id), now), key=event_id)


class DashboardScreen(ConsoleScreen):
    SUB_TITLE = "Dashboard"

    def __init__(self) -> None:
        super().__init__()
        # Event id -> (when it was asked, monotonic seconds; its on-sale window and zone).
        self._windows: dict[str, tuple[float, dict[str, Any]]] = {}

    def body(self) -> ComposeResult:
        with Vertical(id="dashboard"):
            yield Static(id="summary", classes="summary")
            yield Static("Events", classes="heading")
            yield DataTable(id="events", cursor_type="row", zebra_stripes=True)
            yield Static("Waiting rooms", classes="heading", id="rooms-heading")
            yield DataTable(id="rooms", cursor_type="none", zebra_stripes=True)
            yield Static("Job queues", classes="heading")
            yield DataTable(id="queues", cursor_type="none", zebra_stripes=True)
            yield Static(id="workers", classes="summary")

    def on_mount(self) -> None:
        self.query_one("#events", DataTable).add_columns(
            "Event", "Status", "Capacity", "Available", "Held", "Sold",
            "Holds/min", "Orders/min", "Revenue", "Expiring", "Stuck",
        )  # fmt: skip
        self.query_one("#rooms", DataTable).add_columns(*ROOM_COLUMNS)
        self.query_one("#queues", DataTable).add_columns(
            "Queue", "Queued", "Running", "Scheduled", "Deferred", "Failed", "Oldest waiting"
        )
        super().on_mount()

    def _show_sales(self, board: dict[str, Any], jobs: str = "") -> None:
        self.query_one("#summary", Static).update(
            f"Holds expiring within a minute: {board['expiring_soon']}    "
            f"Orders stuck in paying: {board['stuck_paying']}    "
            f"{_refunds(board)}{jobs}As of {when(board['at'])}"
        )

    async def load(self) -> None:
        board = await self.client.get("/staff/dashboard")
        try:
            status: dict[str, Any] | None = await self.client.get("/staff/queues")
        except ApiProblem as problem:
            if problem.status != 403:
                raise
            status = None  # job queues are on-call business; a till sees the sales only
        windows = await self._sale_windows(
            [str(e["event_id"]) for e in board["events"] if e["status"] == "on_sale"]
        )
        now = dt.datetime.fromisoformat(board["at"])
        events = self.query_one("#events", DataTable)
        events.clear()
        for e in board["events"]:
            events.add_row(
                e["title"][:40],
                sale_status(e["status"], windows.get(str(e["event_id"])), now),
                str(e["capacity"]),
                str(e["available"]),
                str(e["held"]),
                str(e["sold"]),
                f"{e['holds_last_minute']} ({e['holds_per_minute_5m']:g} 5m)",
                f"{e['orders_last_minute']} ({e['orders_per_minute_5m']:g} 5m)",
                _revenue(e["revenue"]),
                str(e["expiring_soon"]),
                str(e["stuck_paying"]),
                key=e["event_id"],
            )
        titles = {str(e["event_id"]): e["title"] for e in board["events"]}
        show_rooms(self.query_one("#rooms", DataTable), board.get("waiting_rooms"), titles, now)
        self.query_one("#rooms-heading", Static).display = self.query_one("#rooms", DataTable).display
        queues = self.query_one("#queues", DataTable)
        queues.clear()
        self._show_sales(board)
        if status is None:
            queues.display = False
            self.query_one("#workers", Static).update("Job queues and workers: on-call keys only.")
            return
        queues.display = True
        for q in status["queues"]:
            age = q.get("oldest_queued_age")
            queues.add_row(
                q["name"],
                str(q["queued"]),
                str(q["started"]),
                str(q["scheduled"]),
                str(q["deferred"]),
                str(q["failed"]),
                "-" if age is None else f"{age:.0f} s",
            )
        failed = sum(q["failed"] for q in status["queues"])
        workers = status["workers"]
        self._show_sales(board, f"Failed jobs: {failed}    ")
        self.query_one("#workers", Static).update(
            f"Workers: {len(workers)} live"
            + "".join(f"\n  {w['name']}  {w['state']}  {w.get('current_job') or ''}" for w in workers)
            if workers
            else "Workers: none live — holds still expire by their deadline, but the outbox waits"
        )

    async def _sale_windows(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each event's on-sale window and time zone, which the dashboard does not carry: from
        the event's public page, asked at once for every event not asked within
        ``SALE_WINDOW_SECONDS``. An event whose page does not answer is left out (its status
        is shown as it is) and asked again at the next refresh."""
        clock = time.monotonic()
        stale = [
            event_id
            for event_id in event_ids
            if clock - self._windows.get(event_id, (-math.inf, {}))[0] >= SALE_WINDOW_SECONDS
        ]
        answers = await asyncio.gather(
            *(self.client.get(f"/events/{event_id}") for event_id in stale), return_exceptions=True
        )
        for event_id, answer in zip(stale, answers, strict=True):
            if isinstance(answer, Unreachable | ApiProblem):
                continue
            if isinstance(answer, BaseException):
                raise answer
            self._windows[event_id] = (clock, {field: answer[field] for field in WINDOW_FIELDS})
        return {event_id: self._windows[event_id][1] for event_id in event_ids if event_id in self._windows}


def _refunds(board: dict[str, Any]) -> str:
    # Older APIs do not report refunds: say nothing rather than a wrong zero.
    counts = board.get("refunds")
    if not counts:
        return ""
    waiting = counts["pending"] + counts["submitted"]
    return f"Refunds waiting: {waiting}, failed: {counts['failed']}    "
