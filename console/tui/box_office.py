"""Box office: a walk-up sale from event to printed tickets.

Pick an event (Enter), move over the seat grid with the arrows and select seats with Space
(or pick a GA tier and press n for a quantity), hold them (s), take cash (c) or a card on the
till's terminal (k). The order's tickets are shown with a QR code and saved as PDF files. A
sale not paid is released: by x, on leaving the event, or when the console closes.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, ClassVar

import segno
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from console.tui.base import ConsoleScreen
from console.tui.client import ApiProblem, Unreachable
from console.tui.format import money, when
from console.tui.modals import AskModal, CashModal, ConfirmModal, Dialog

STATE_STYLE = {
    "available": "bold green",
    "held": "yellow",
    "sold": "red",
    "blocked": "grey42",
}
SELECTED_STYLE = "bold black on cyan"
SEAT = "●"


def qr_text(token: str) -> Text:
    """The ticket's QR code drawn with half blocks, two modules per character cell, dark on
    light with its quiet zone, so a phone can scan it off the screen."""
    rows = [list(row) for row in segno.make(token, error="m").matrix_iter(scale=1, border=2)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = []
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        lines.append(
            "".join(
                "█" if t and b else "▀" if t else "▄" if b else " " for t, b in zip(top, bottom, strict=True)
            )
        )
    return Text("\n".join(lines), style="black on white")


class TicketsModal(Dialog[None]):
    """The confirmed order: change due, each ticket with its QR code, where the PDFs are.
    Enter or Escape closes it, for the next sale."""

    def __init__(self, summary: str, tickets: list[tuple[str, str, Path]]) -> None:
        super().__init__()
        self.summary = summary
        self.tickets = tickets

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog tickets"):
            yield Static(self.summary, classes="question")
            for seat, token, pdf in self.tickets:
                yield Static(f"{seat}    saved: {pdf}", classes="ticket-label")
                yield Static(qr_text(token), classes="qr")
            yield Static("Enter or Escape: next sale", classes="hint")

    def action_submit(self) -> None:
        self.dismiss(None)


class BoxOfficeScreen(ConsoleScreen):
    SUB_TITLE = "Box office"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_seat", "Select seat"),
        Binding("n", "ga_quantity", "GA quantity"),
        Binding("s", "hold", "Hold"),
        Binding("c", "pay_cash", "Cash"),
        Binding("k", "pay_card", "Card"),
        Binding("x", "abandon", "Abandon"),
        Binding("escape", "back", "Events"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.event: dict[str, Any] | None = None
        self.positions: dict[int, Coordinate] = {}
        self.seats: dict[Coordinate, dict[str, Any]] = {}
        self.selected: set[int] = set()
        self.sale: dict[str, Any] | None = None
        # Reused until an answer arrives, so pressing s again after a lost answer gets the
        # same sale back instead of a second hold.
        self._hold_key: str | None = None
        self._starting = False

    def body(self) -> ComposeResult:
        with Vertical(id="box-office"):
            yield Static("Pick an event and press Enter.", id="sale-status", classes="summary")
            with Horizontal(id="till"):
                yield DataTable(id="event-list", cursor_type="row", zebra_stripes=True)
                yield DataTable(id="seats", cursor_type="cell", show_header=False)
                yield DataTable(id="ga", cursor_type="row")
            yield Static(id="seat-info", classes="summary")

    def on_mount(self) -> None:
        self.query_one("#event-list", DataTable).add_columns("Event", "Venue", "Starts", "From")
        self.query_one("#ga", DataTable).add_columns("GA tier", "Price", "Left")
        self._show_events()
        super().on_mount()
        self._load_events()

    # --- events ---------------------------------------------------------------------------

    def _show_events(self) -> None:
        self.query_one("#event-list").display = True
        self.query_one("#seats").display = False
        self.query_one("#ga").display = False
        self.query_one("#event-list", DataTable).focus()

    @work(exclusive=True, group="events", exit_on_error=False)
    async def _load_events(self) -> None:
        try:
            listed = await self.client.get("/staff/events", limit=100)
        except (Unreachable, ApiProblem):
            return  # the poll's banner says why; Escape tries again
        table = self.query_one("#event-list", DataTable)
        table.clear()
        for event in listed["items"]:
            if not event["on_sale_now"]:
                continue
            price = event.get("price_from")
            table.add_row(
                event["title"][:40],
                f"{event['venue']['name']}, {event['city']}"[:40],
                event["starts_at"][:16].replace("T", " "),
                money(price["amount_minor"], price["currency"]) if price else "-",
                key=str(event["id"]),
            )

    @on(DataTable.RowSelected, "#event-list")
    def picked(self, event: DataTable.RowSelected) -> None:
        self.event = {"id": event.row_key.value, "title": str(event.data_table.get_row(event.row_key)[0])}
        self.positions, self.seats, self.selected = {}, {}, set()
        self.query_one("#seats", DataTable).clear(columns=True)
        self.query_one("#ga", DataTable).clear()
        self.query_one("#event-list").display = False
        self.refresh_now()

    # --- the live map -----------------------------------------------------------------------

    async def load(self) -> None:
        if self.event is None:
            return
        seatmap = await self.client.get(f"/staff/events/{self.event['id']}/seatmap")
        seats_table = self.query_one("#seats", DataTable)
        if not self.positions:
            self._lay_out(seats_table, seatmap["seats"])
        for seat in seatmap["seats"]:
            where = self.positions.get(seat["id"])
            if where is not None:
                self.seats[where] = seat
                seats_table.update_cell_at(where, self._cell(seat))
        ga = self.query_one("#ga", DataTable)
        ga.clear()
        for tier in seatmap["ga"]:
            price = tier["price"]
            ga.add_row(
                f"{tier['area']} · {tier['tier']}",
                money(price["amount_minor"], price["currency"]),
                str(tier["remaining"]),
                key=str(tier["tier_id"]),
            )
        seats_table.display = bool(seatmap["seats"])
        ga.display = bool(seatmap["ga"])
        if self.app.screen is self and not (seats_table.has_focus or ga.has_focus):
            (seats_table if seatmap["seats"] else ga).focus()
        self._describe_cursor()
        self._status()

    def _lay_out(self, table: DataTable[Any], seats: list[dict[str, Any]]) -> None:
        """One grid row per seat row, seats left to right by their map position."""
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for seat in sorted(seats, key=lambda s: (s["section"], s["y"], s["x"])):
            rows.setdefault((seat["section"], seat["row"]), []).append(seat)
        width = max((len(r) for r in rows.values()), default=0)
        table.add_column("Row", key="row")
        for index in range(width):
            table.add_column("", key=f"c{index}", width=1)
        for line, ((section, row), members) in enumerate(rows.items()):
            cells: list[Any] = [f"{section} {row}"] + [""] * width
            table.add_row(*cells, key=f"{section}/{row}")
            for index, seat in enumerate(members):
                self.positions[seat["id"]] = Coordinate(line, index + 1)

    def _cell(self, seat: dict[str, Any]) -> Text:
        if seat["id"] in self.selected:
            return Text(SEAT, style=SELECTED_STYLE)
        return Text(SEAT, style=STATE_STYLE.get(seat["state"], ""))

    @on(DataTable.CellHighlighted, "#seats")
    def _highlighted(self) -> None:
        self._describe_cursor()

    def _describe_cursor(self) -> None:
        seats_table = self.query_one("#seats", DataTable)
        seat = self.seats.get(seats_table.cursor_coordinate)
        info = self.query_one("#seat-info", Static)
        if seat is None or not seats_table.display:
            info.update("Legend: ● free (green), held (yellow), sold (red), selected (cyan)")
            return
        price = seat["price"]
        info.update(
            f"Section {seat['section']}, row {seat['row']}, seat {seat['number']}"
            f"{' (accessible)' if seat['accessible'] else ''} — "
            f"{money(price['amount_minor'], price['currency'])} — {seat['state']}"
        )

    def _status(self) -> None:
        status = self.query_one("#sale-status", Static)
        if self.event is None:
            status.update("Pick an event and press Enter.")
        elif self.sale is not None:
            total = self.sale["total"]
            status.update(
                f"{self.event['title']}: sale of {self.sale['quantity']} held until "
                f"{when(self.sale['expires_at'])}, total {money(total['amount_minor'], total['currency'])}. "
                "c cash · k card · x abandon"
            )
        else:
            chosen = [self.seats[self.positions[i]] for i in self.selected if i in self.positions]
            total = sum(s["price"]["amount_minor"] for s in chosen)
            currency = chosen[0]["price"]["currency"] if chosen else ""
            picked = f"{len(chosen)} selected, {money(total, currency)}" if chosen else "nothing selected"
            status.update(
                f"{self.event['title']}: {picked}. Space select · s hold · n GA quantity · Esc events"
            )

    # --- actions ----------------------------------------------------------------------------

    def action_toggle_seat(self) -> None:
        seats_table = self.query_one("#seats", DataTable)
        seat = self.seats.get(seats_table.cursor_coordinate)
        if seat is None or self.sale is not None:
            return
        if seat["id"] in self.selected:
            self.selected.discard(seat["id"])
        elif seat["state"] == "available":
            self.selected.add(seat["id"])
        else:
            self.tell(f"Seat {seat['number']} is {seat['state']}.", error=True)
            return
        seats_table.update_cell_at(seats_table.cursor_coordinate, self._cell(seat))
        self._hold_key = None
        self._status()

    def action_hold(self) -> None:
        if self.event is None or self.sale is not None:
            return
        if not self.selected:
            self.tell("Select seats with Space first (or n for a GA quantity).", error=True)
            return
        self._start_sale({"event_id": self.event["id"], "seat_ids": sorted(self.selected)})

    def action_ga_quantity(self) -> None:
        ga = self.query_one("#ga", DataTable)
        if self.event is None or self.sale is not None or not ga.display or ga.row_count == 0:
            return
        tier_id = ga.coordinate_to_cell_key(ga.cursor_coordinate).row_key.value
        name = str(ga.get_row_at(ga.cursor_row)[0])

        def chosen(answer: str | None) -> None:
            if answer is None:
                return
            quantity = int(answer) if answer.isascii() and answer.isdigit() else 0
            if not 1 <= quantity <= 100:
                self.tell("A quantity is a whole number from 1 to 100.", error=True)
                return
            assert self.event is not None
            self._start_sale({"event_id": self.event["id"], "tier_id": tier_id, "quantity": quantity})

        self.app.push_screen(AskModal(f"How many for {name}?", "e.g. 2"), chosen)

    def _start_sale(self, body: dict[str, Any]) -> None:
        # One hold request at a time: cancelling one in flight could leave a hold on the
        # server that this till never heard of (and so would never release).
        if self._starting:
            return
        self._starting = True
        self._request_sale(body)

    @work(group="sale", exit_on_error=False)
    async def _request_sale(self, body: dict[str, Any]) -> None:
        try:
            await self._hold(body)
        finally:
            self._starting = False

    async def _hold(self, body: dict[str, Any]) -> None:
        self._hold_key = self._hold_key or uuid.uuid4().hex
        try:
            sale = await self.client.post("/staff/sales", body, idempotency_key=self._hold_key)
        except Unreachable as error:
            self.tell(f"Not held: {error}. Press s again to retry.", error=True)
            return
        except ApiProblem as problem:
            if problem.code != "idempotency-key-in-progress":
                self._hold_key = None  # keep it while the first request may still land
            self.tell(f"{problem.title}: {problem.detail}", error=True)
            self.refresh_now()
            return
        self._hold_key = None
        self.sale = sale
        self.console.open_sales.add(str(sale["id"]))
        self.selected.clear()
        self.refresh_now()

    def action_pay_cash(self) -> None:
        if self.sale is None:
            return
        total = self.sale["total"]

        def tendered(amount: int | None) -> None:
            if amount is not None:
                self._pay({"method": "cash", "tendered_minor": amount})

        self.app.push_screen(CashModal(total["amount_minor"], total["currency"]), tendered)

    def action_pay_card(self) -> None:
        if self.sale is None:
            return

        def referenced(reference: str | None) -> None:
            if reference is not None:
                self._pay({"method": "card_present", "reference": reference})

        self.app.push_screen(
            AskModal("Card terminal reference:", "as printed on the terminal slip"), referenced
        )

    @work(exclusive=True, group="sale", exit_on_error=False)
    async def _pay(self, body: dict[str, Any]) -> None:
        assert self.sale is not None
        sale_id = str(self.sale["id"])
        try:
            paid = await self.client.post(f"/staff/sales/{sale_id}/payment", body)
        except Unreachable as error:
            # Paying is idempotent by sale: pressing c or k again cannot take money twice.
            self.tell(f"No answer: {error}. Pay again when the banner clears.", error=True)
            return
        except ApiProblem as problem:
            self.tell(f"{problem.title}: {problem.detail}", error=True)
            if problem.code == "sale-seats-gone":
                self.sale = None
                self.console.open_sales.discard(sale_id)
                self.refresh_now()
            return
        self.sale = None
        self.console.open_sales.discard(sale_id)
        change = paid.get("change_due")
        summary = f"Order {paid['order']['id']} confirmed."
        if change is not None:
            summary += f" Change due: {money(change['amount_minor'], change['currency'])}."
        try:
            tickets = await self._save_tickets(paid["ticket_ids"])
        except (Unreachable, ApiProblem, OSError) as error:
            # Paid and confirmed: only the printing failed. Say so; never lose the order.
            self.tell(f"{summary} The tickets could not be fetched or saved ({error}).", error=True)
            tickets = []
        self.app.push_screen(TicketsModal(summary, tickets))
        self.refresh_now()

    async def _save_tickets(self, ticket_ids: list[str]) -> list[tuple[str, str, Path]]:
        folder = self.console.tickets_dir
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        saved = []
        for ticket_id in ticket_ids:
            ticket = await self.client.get(f"/staff/tickets/{ticket_id}")
            pdf = folder / f"ticket-{ticket_id}.pdf"
            await asyncio.to_thread(
                pdf.write_bytes, await self.client.get_bytes(f"/staff/tickets/{ticket_id}/ticket.pdf")
            )
            saved.append((str(ticket["seat"]), str(ticket["token"]), pdf))
        return saved

    def action_abandon(self) -> None:
        if self.sale is None:
            if self.selected:
                self.selected.clear()
                self.positions = {}
                self.query_one("#seats", DataTable).clear(columns=True)
                self.refresh_now()
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._abandon()

        self.app.push_screen(ConfirmModal("Abandon this sale and put its seats back on sale?"), confirmed)

    @work(exclusive=True, group="sale", exit_on_error=False)
    async def _abandon(self, then_back: bool = False) -> None:
        if self.sale is None:
            return
        sale_id = str(self.sale["id"])
        try:
            await self.client.delete(f"/staff/sales/{sale_id}")
        except (Unreachable, ApiProblem) as error:
            self.tell(f"Not released: {error}", error=True)
            return
        self.sale = None
        self.console.open_sales.discard(sale_id)
        self.tell("Sale abandoned; its seats are back on sale.")
        if then_back:
            self._to_events()
        else:
            self.refresh_now()

    def action_back(self) -> None:
        if self.event is None:
            return
        if self.sale is None:
            self._to_events()
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._abandon(then_back=True)

        self.app.push_screen(ConfirmModal("Leave this event and abandon the sale?"), confirmed)

    def _to_events(self) -> None:
        self.event = None
        self.selected = set()
        self.positions = {}
        self._show_events()
        self._status()
        self._load_events()
