"""On call: orders stuck in payment, refunds not paid back, failed jobs, pausing or resuming a
sale, and steering a waiting room (pause, resume, admission rate)."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from console.tui.base import ConsoleScreen
from console.tui.client import ApiProblem, Unreachable
from console.tui.dashboard import ROOM_COLUMNS, show_rooms
from console.tui.format import money, when
from console.tui.modals import AskModal, ConfirmModal


class OnCallScreen(ConsoleScreen):
    SUB_TITLE = "On call"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "reconcile", "Reconcile"),
        Binding("f", "refund", "Refund"),
        Binding("t", "retry_refund", "Retry refund"),
        Binding("r", "requeue", "Requeue job"),
        Binding("delete", "delete_job", "Delete job"),
        Binding("p", "pause", "Pause sale"),
        Binding("u", "resume", "Resume sale"),
        Binding("w", "toggle_room", "Pause/resume room"),
        Binding("a", "room_rate", "Admission rate"),
    ]

    def __init__(self) -> None:
        super().__init__()
        # Event id -> its waiting room as the last refresh saw it.
        self._rooms: dict[str, dict[str, Any]] = {}

    def body(self) -> ComposeResult:
        with Vertical(id="on-call"):
            yield Static(
                "Orders stuck in payment  (c reconcile with the provider · f refund)", classes="heading"
            )
            yield DataTable(id="stuck", cursor_type="row", zebra_stripes=True)
            yield Static("Refunds not paid back  (t retry a failed one)", classes="heading")
            yield DataTable(id="refunds", cursor_type="row", zebra_stripes=True)
            yield Static("Failed jobs  (r requeue · Delete remove)", classes="heading")
            yield DataTable(id="failed", cursor_type="row", zebra_stripes=True)
            yield Static("Sales  (p pause · u resume)", classes="heading")
            yield DataTable(id="sales", cursor_type="row", zebra_stripes=True)
            yield Static("Waiting rooms  (w pause or resume · a admission rate)", classes="heading")
            yield DataTable(id="rooms", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#stuck", DataTable).add_columns(
            "Hold", "Event", "Buyer", "Amount", "Provider", "Payment", "Deadline", "Age"
        )
        self.query_one("#refunds", DataTable).add_columns(
            "Refund", "State", "Amount", "Provider", "Order", "Errors", "Last error", "Since"
        )
        self.query_one("#failed", DataTable).add_columns("Job", "Queue", "Function", "Failed at", "Error")
        self.query_one("#sales", DataTable).add_columns("Event", "Status", "Sold", "Held", "Available")
        self.query_one("#rooms", DataTable).add_columns(*ROOM_COLUMNS)
        super().on_mount()

    @staticmethod
    def _refill(table: DataTable[Any], rows: list[tuple[str, list[str]]]) -> None:
        keep = table.cursor_row
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))

    async def load(self) -> None:
        stuck = await self.client.get("/staff/orders/stuck")
        failed = await self.client.get("/staff/jobs/failed")
        refunds = await self.client.get("/staff/refunds")
        board = await self.client.get("/staff/dashboard")
        self._refill(
            self.query_one("#stuck", DataTable),
            [
                (
                    str(o["hold_id"]),
                    [
                        str(o["hold_id"])[:8],
                        o["event_title"][:28],
                        o["buyer"][:28],
                        money(o["amount"]["amount_minor"], o["amount"]["currency"]),
                        o["provider"] or "-",
                        o["payment_state"] or "-",
                        when(o["deadline"]),
                        f"{o['age_seconds']} s",
                    ],
                )
                for o in stuck["items"]
            ],
        )
        self._refill(
            self.query_one("#refunds", DataTable),
            [
                (
                    str(r["id"]),
                    [
                        str(r["id"])[:8],
                        r["state"],
                        money(r["amount"]["amount_minor"], r["amount"]["currency"]),
                        r["provider"],
                        str(r["order_id"] or r["hold_id"])[:8],
                        str(r["attempts"]),
                        (r["last_error"] or "")[:48],
                        when(r["updated_at"]),
                    ],
                )
                for r in refunds["items"]
            ],
        )
        self._refill(
            self.query_one("#failed", DataTable),
            [
                (
                    j["id"],
                    [
                        j["id"][:12],
                        j["queue"],
                        j["function"][:40],
                        when(j["ended_at"]),
                        (j["error"] or "")[:60],
                    ],
                )
                for j in failed["items"]
            ],
        )
        self._refill(
            self.query_one("#sales", DataTable),
            [
                (
                    str(e["event_id"]),
                    [e["title"][:40], e["status"], str(e["sold"]), str(e["held"]), str(e["available"])],
                )
                for e in board["events"]
            ],
        )
        rooms = board.get("waiting_rooms") or []
        self._rooms = {str(room["event_id"]): room for room in rooms}
        table = self.query_one("#rooms", DataTable)
        keep = table.cursor_row
        show_rooms(
            table,
            rooms,
            {str(e["event_id"]): e["title"] for e in board["events"]},
            dt.datetime.fromisoformat(board["at"]),
        )
        # Shown even when empty: the heading says which keys act on it.
        table.display = True
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))

    def _selected(self, table_id: str) -> tuple[str, str] | None:
        table = self.query_one(table_id, DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return (key or "", str(table.get_row_at(table.cursor_row)[0]))

    def _confirm_then(self, question: str, method: str, path: str, done: str) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self._act(method, path, done)

        self.app.push_screen(ConfirmModal(question), confirmed)

    def action_reconcile(self) -> None:
        picked = self._selected("#stuck")
        if picked:
            # Asking the provider changes nothing it has not already decided: no confirmation.
            self._act("POST", f"/staff/orders/{picked[0]}/reconcile", "Reconciled: {status}.")

    def action_refund(self) -> None:
        picked = self._selected("#stuck")
        if not picked:
            return
        self._refund_stuck(picked[0])

    @work(group="act", exit_on_error=False)
    async def _refund_stuck(self, hold_id: str) -> None:
        # A stuck payment is settled first; only a confirmed order can be refunded.
        try:
            settled = await self.client.post(f"/staff/orders/{hold_id}/reconcile")
        except (Unreachable, ApiProblem) as error:
            self.tell(f"Nothing changed: {error}", error=True)
            return
        order_id = settled.get("order_id")
        if not order_id:
            self.tell(f"No order to refund: the payment is {settled['status']}.", error=True)
            self.refresh_now()
            return
        self._confirm_then(
            f"Refund order {order_id[:8]} in full and put its seats back on sale?",
            "POST",
            f"/staff/orders/{order_id}/refund",
            "Order refunded.",
        )

    def action_retry_refund(self) -> None:
        picked = self._selected("#refunds")
        if picked:
            self._confirm_then(
                f"Send refund {picked[1]} to the provider again?",
                "POST",
                f"/staff/refunds/{picked[0]}/retry",
                "Refund pending again: the refund job sends it within a minute.",
            )

    def action_requeue(self) -> None:
        picked = self._selected("#failed")
        if picked:
            self._act("POST", f"/staff/jobs/{picked[0]}/requeue", "Job requeued.")

    def action_delete_job(self) -> None:
        picked = self._selected("#failed")
        if picked:
            self._confirm_then(
                f"Delete failed job {picked[1]}? It will not run again.",
                "DELETE",
                f"/staff/jobs/{picked[0]}",
                "Job deleted.",
            )

    def action_pause(self) -> None:
        picked = self._selected("#sales")
        if picked:
            self._confirm_then(
                f"Pause the sale of {picked[1]}? No new holds until it is resumed.",
                "POST",
                f"/staff/events/{picked[0]}/pause",
                "Sale paused.",
            )

    def action_resume(self) -> None:
        picked = self._selected("#sales")
        if picked:
            self._act("POST", f"/staff/events/{picked[0]}/resume", "Sale resumed.")

    def action_toggle_room(self) -> None:
        picked = self._selected("#rooms")
        if not picked:
            return
        event_id, title = picked
        path = f"/staff/events/{event_id}/waiting-room"
        if self._rooms.get(event_id, {}).get("paused"):
            self._act("POST", f"{path}/resume", "Waiting room admitting again.")
            return
        self._confirm_then(
            f"Pause admission to {title}? Fans keep their places; nobody new gets in.",
            "POST",
            f"{path}/pause",
            "Waiting room paused.",
        )

    def action_room_rate(self) -> None:
        picked = self._selected("#rooms")
        if not picked:
            return
        event_id, title = picked
        now = self._rooms.get(event_id, {}).get("rate_per_minute")

        def answered(text: str | None) -> None:
            if text is None or not text.strip():
                return
            if not text.strip().isdigit() or int(text) < 1:
                self.tell(f"Not a rate: {text!r}. Give fans a minute, a whole number.", error=True)
                return
            self._set_rate(event_id, int(text))

        self.app.push_screen(
            AskModal(f"Fans admitted a minute to {title} (now {now}):", "e.g. 600"), answered
        )

    @work(group="act", exit_on_error=False)
    async def _set_rate(self, event_id: str, rate: int) -> None:
        try:
            room = await self.client.put(f"/staff/events/{event_id}/waiting-room", {"rate_per_minute": rate})
        except (Unreachable, ApiProblem) as error:
            self.tell(f"Nothing changed: {error}", error=True)
            return
        self.tell(f"Admitting {room['rate_per_minute']} fans a minute.")
        self.refresh_now()

    @work(group="act", exit_on_error=False)
    async def _act(self, method: str, path: str, done: str) -> None:
        answer: Any = None
        try:
            if method == "DELETE":
                await self.client.delete(path)
            else:
                answer = await self.client.post(path)
        except (Unreachable, ApiProblem) as error:
            self.tell(f"Nothing changed: {error}", error=True)
            return
        self.tell(done.format(**answer) if isinstance(answer, dict) else done)
        self.refresh_now()
