"""Dashboard: what is selling, how fast, what is stuck, and whether the daemon keeps up."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from console.tui.base import ConsoleScreen
from console.tui.client import ApiProblem
from console.tui.format import money, when


def _revenue(amounts: list[dict[str, Any]]) -> str:
    return ", ".join(money(a["amount_minor"], a["currency"]) for a in amounts) or "-"


class DashboardScreen(ConsoleScreen):
    SUB_TITLE = "Dashboard"

    def body(self) -> ComposeResult:
        with Vertical(id="dashboard"):
            yield Static(id="summary", classes="summary")
            yield Static("Events", classes="heading")
            yield DataTable(id="events", cursor_type="row", zebra_stripes=True)
            yield Static("Job queues", classes="heading")
            yield DataTable(id="queues", cursor_type="none", zebra_stripes=True)
            yield Static(id="workers", classes="summary")

    def on_mount(self) -> None:
        self.query_one("#events", DataTable).add_columns(
            "Event", "Status", "Capacity", "Available", "Held", "Sold",
            "Holds/min", "Orders/min", "Revenue", "Expiring", "Stuck",
        )  # fmt: skip
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
        events = self.query_one("#events", DataTable)
        events.clear()
        for e in board["events"]:
            events.add_row(
                e["title"][:40],
                e["status"],
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


def _refunds(board: dict[str, Any]) -> str:
    # Older APIs do not report refunds: say nothing rather than a wrong zero.
    counts = board.get("refunds")
    if not counts:
        return ""
    waiting = counts["pending"] + counts["submitted"]
    return f"Refunds waiting: {waiting}, failed: {counts['failed']}    "
