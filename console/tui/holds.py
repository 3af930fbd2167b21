"""Holds: find holds by event, fan or hold id; release one, or every expired one."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, DataTable, Input, Static

from console.tui.base import ConsoleScreen
from console.tui.client import ApiProblem, Unreachable
from console.tui.format import money, when
from console.tui.modals import ConfirmModal


def search_params(text: str, expired: bool) -> dict[str, Any]:
    """What the search box means: a hold id, an event id (both UUIDs: tried as a hold first,
    by the caller), or a fan's email."""
    params: dict[str, Any] = {"expired": "true" if expired else None, "limit": 200}
    text = text.strip()
    if not text:
        return params
    try:
        uuid.UUID(text)
    except ValueError:
        params["fan_email"] = text
    else:
        params["hold_id"] = text
    return params


class HoldsScreen(ConsoleScreen):
    SUB_TITLE = "Holds"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "release", "Release"),
        Binding("e", "release_expired", "Release expired"),
        Binding("slash", "search", "Search"),
    ]

    def body(self) -> ComposeResult:
        with Vertical(id="holds"):
            with Horizontal(classes="filters"):
                yield Input(placeholder="hold id, event id or fan email; Enter to search", id="query")
                yield Checkbox("Expired only", id="expired")
            yield DataTable(id="hold-list", cursor_type="row", zebra_stripes=True)
            yield Static(id="holds-summary", classes="summary")

    def on_mount(self) -> None:
        self.query_one("#hold-list", DataTable).add_columns(
            "Hold", "Event", "Owner", "State", "Qty", "Total", "Expires", "Left"
        )
        # The table has the focus, so r and e act at once; / goes to the search box.
        self.query_one("#hold-list", DataTable).focus()
        super().on_mount()

    @on(Input.Submitted, "#query")
    @on(Checkbox.Changed, "#expired")
    def _filters_changed(self) -> None:
        self.refresh_now()
        self.query_one("#hold-list", DataTable).focus()

    def action_search(self) -> None:
        self.query_one("#query", Input).focus()

    async def load(self) -> None:
        text = self.query_one("#query", Input).value
        params = search_params(text, self.query_one("#expired", Checkbox).value)
        found = await self.client.get("/staff/holds", **params)
        if not found["items"] and "hold_id" in params:
            # A UUID that is no hold's id may be an event's.
            params["event_id"] = params.pop("hold_id")
            found = await self.client.get("/staff/holds", **params)
        table = self.query_one("#hold-list", DataTable)
        keep = table.cursor_row
        table.clear()
        for hold in found["items"]:
            total = hold["total"]
            left = hold["seconds_left"]
            table.add_row(
                str(hold["id"])[:8],
                hold["event_title"][:30],
                hold["owner"][:30],
                hold["state"] + (" (overdue)" if hold["overdue"] else ""),
                str(hold["quantity"]),
                money(total["amount_minor"], total["currency"]),
                when(hold["expires_at"]),
                "-" if left is None else f"{left} s",
                key=str(hold["id"]),
            )
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))
        overdue = sum(1 for hold in found["items"] if hold["overdue"])
        self.query_one("#holds-summary", Static).update(
            f"{len(found['items'])} holds, {overdue} past their deadline.  "
            "r release the selected hold · e release every expired hold · / search"
        )

    def _selected(self) -> str | None:
        table = self.query_one("#hold-list", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def action_release(self) -> None:
        hold_id = self._selected()
        if hold_id is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._act(f"/staff/holds/{hold_id}/release", None, f"Hold {hold_id[:8]} released.")

        self.app.push_screen(
            ConfirmModal(f"Release hold {hold_id[:8]} and put its seats back on sale?"), confirmed
        )

    def action_release_expired(self) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self._act("/staff/holds/release-expired", {}, "Expired holds released: {released}.")

        self.app.push_screen(ConfirmModal("Release every hold past its deadline?"), confirmed)

    @work(group="act", exit_on_error=False)
    async def _act(self, path: str, body: dict[str, Any] | None, done: str) -> None:
        try:
            answer = await self.client.post(path, body)
        except (Unreachable, ApiProblem) as error:
            self.tell(f"Nothing changed: {error}", error=True)
            return
        self.tell(done.format(**answer) if isinstance(answer, dict) else done)
        self.refresh_now()
