"""Events, for admins: every event with its phase and sales; create one from a venue, change
its prices and on-sale times, put it on sale, pause or resume it, take it off sale, cancel it
(the question says how many orders that refunds). Everything through ``/staff/catalog`` and
on-call's pause and resume; the server checks the key's role."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Input, Label, Select, Static

from console.tier_syntax import SyntaxProblem, parse_prices, parse_pricing, price_text, suggested_tiers
from console.tui.base import ConsoleScreen
from console.tui.client import ApiProblem, Unreachable
from console.tui.format import at_the_event, money
from console.tui.modals import ConfirmModal, Dialog

CATEGORIES = ("music", "comedy", "theatre", "sports", "family", "classical", "festival", "talk")


def local_input(iso: str, timezone: str) -> str:
    """An API time as an organiser types it back: the event's wall clock, to the minute."""
    moment = dt.datetime.fromisoformat(iso)
    try:
        moment = moment.astimezone(ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M")


def typed_time(text: str, label: str) -> str:
    """A typed time for the API (ISO 8601; without an offset, the event's own time).

    Raises:
        SyntaxProblem: not a date and time.
    """
    try:
        return dt.datetime.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise SyntaxProblem(
            f"{label}: {text.strip() or 'nothing'} is not a date and time (2027-03-01T19:30)"
        ) from None


class FieldsModal(Dialog[dict[str, str] | None]):
    """A few labelled lines to fill in; Enter gives them all (``check`` may refuse them with
    a reason, shown under the fields), Escape cancels."""

    def __init__(self, title: str, fields: list[tuple[str, str, str]], check: Any = None) -> None:
        super().__init__()
        self.title_text = title
        # (id, label, starting value)
        self.fields = fields
        self.check = check

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog form"):
            yield Label(self.title_text, classes="question")
            for ident, label, value in self.fields:
                yield Label(label, classes="field")
                yield Input(value=value, id=ident)
            yield Static(id="hint", classes="hint")

    def values(self) -> dict[str, str]:
        return {ident: self.query_one(f"#{ident}", Input).value for ident, _, _ in self.fields}

    def action_submit(self) -> None:
        values = self.values()
        if self.check is not None:
            try:
                self.check(values)
            except SyntaxProblem as problem:
                self.query_one("#hint", Static).update(str(problem))
                return
        self.dismiss(values)


class NewEventModal(Dialog[dict[str, Any] | None]):
    """Create an event from a venue's layout: pick the layout, and its tiers start as the
    layout's own (or one per section and GA area, named after it), priced 0, for the
    organiser to price or merge."""

    def __init__(self, venues: list[dict[str, Any]]) -> None:
        super().__init__()
        self.layouts = {
            f"{venue['slug']}/{layout['name']}": (venue, layout)
            for venue in venues
            for layout in venue["layouts"]
        }

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog form"):
            yield Label("New event (a draft: put it on sale when ready)", classes="question")
            yield Select(
                [
                    (
                        f"{venue['name']}, {venue['city']}: {layout['name']}"
                        f" ({layout['seats'] + layout['ga_places']} places)",
                        key,
                    )
                    for key, (venue, layout) in self.layouts.items()
                ],
                prompt="Venue and layout",
                id="layout",
            )
            for ident, label in (
                ("title", "Title"),
                ("performer", "Performer"),
                ("starts", "Starts (the venue's time, 2027-03-01T19:30)"),
                ("onsale", "Sale opens (the venue's time)"),
                ("currency", "Currency (GBP, EUR...)"),
                ("tiers", "Tiers: LAYOUT TIER=PRICE; ... or NAME=PRICE@SECTION,...; NAME=PRICE@ga:AREA"),
            ):
                yield Label(label, classes="field")
                yield Input(id=ident)
            yield Select([(c, c) for c in CATEGORIES], prompt="Category", value="music", id="category")
            yield Static(id="hint", classes="hint")

    @on(Select.Changed, "#layout")
    def layout_chosen(self, event: Select.Changed) -> None:
        tiers = self.query_one("#tiers", Input)
        if isinstance(event.value, str) and not tiers.value:
            tiers.value = suggested_tiers(self.layouts[event.value][1])

    def request(self) -> dict[str, Any]:
        """The body of ``POST /staff/catalog/events``.

        Raises:
            SyntaxProblem: something is missing or cannot be read.
        """
        chosen = self.query_one("#layout", Select).value
        if not isinstance(chosen, str):
            raise SyntaxProblem("choose the venue and layout")
        venue, layout = self.layouts[chosen]
        text = {ident: self.query_one(f"#{ident}", Input).value.strip() for ident in
                ("title", "performer", "starts", "onsale", "currency", "tiers")}  # fmt: skip
        for ident in ("title", "performer"):
            if not text[ident]:
                raise SyntaxProblem(f"give the {ident}")
        currency = text["currency"].upper()
        if len(currency) != 3 or not currency.isalpha():
            raise SyntaxProblem("the currency is three letters, such as GBP")
        category = self.query_one("#category", Select).value
        return {
            "venue": venue["slug"],
            "layout": layout["name"],
            "title": text["title"],
            "performer": text["performer"],
            "category": category if isinstance(category, str) else "music",
            "starts_at": typed_time(text["starts"], "Starts"),
            "onsale_starts_at": typed_time(text["onsale"], "Sale opens"),
            "currency": currency,
            **parse_pricing(text["tiers"], currency),
        }

    def action_submit(self) -> None:
        try:
            body = self.request()
        except SyntaxProblem as problem:
            self.query_one("#hint", Static).update(str(problem))
            return
        self.dismiss(body)


class EventsScreen(ConsoleScreen):
    SUB_TITLE = "Events"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New"),
        Binding("p", "prices", "Prices"),
        Binding("t", "times", "Sale times"),
        Binding("s", "on_sale", "Put on sale"),
        Binding("z", "pause", "Pause"),
        Binding("u", "resume", "Resume"),
        Binding("f", "off_sale", "Off sale"),
        Binding("c", "cancel", "Cancel event"),
    ]

    def __init__(self) -> None:
        super().__init__()
        # The highlighted event as the API last described it.
        self.detail: dict[str, Any] | None = None

    def body(self) -> ComposeResult:
        with Vertical(id="events-admin"):
            yield DataTable(id="event-rows", cursor_type="row", zebra_stripes=True)
            yield Static(id="event-detail", classes="summary")

    def on_mount(self) -> None:
        table = self.query_one("#event-rows", DataTable)
        table.add_columns("Event", "Starts (venue time)", "Phase", "Sold", "Orders")
        table.focus()
        super().on_mount()

    @on(DataTable.RowHighlighted, "#event-rows")
    def _moved(self, event: DataTable.RowHighlighted) -> None:
        # Only the detail is read again: the list's own refill highlights rows too, and a
        # whole refresh from here would start (and cancel) itself for ever.
        key = event.row_key.value
        if key is not None and (self.detail is None or self.detail["id"] != key):
            self._load_detail(key)

    @work(exclusive=True, group="detail", exit_on_error=False)
    async def _load_detail(self, key: str) -> None:
        try:
            detail = await self.client.get(f"/staff/catalog/events/{key}")
        except (Unreachable, ApiProblem):
            return  # the next poll tries again, and shows why
        if self._selected() == key:
            self.detail = detail
            self.query_one("#event-detail", Static).update(self._describe(detail))

    def _selected(self) -> str | None:
        table = self.query_one("#event-rows", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    async def load(self) -> None:
        rows = (await self.client.get("/staff/catalog/events"))["items"]
        table = self.query_one("#event-rows", DataTable)
        keep = table.cursor_row
        table.clear()
        for row in rows:
            table.add_row(
                row["title"][:32],
                at_the_event(row["starts_at"], row["timezone"]),
                row["phase"].replace("_", " "),
                f"{row['sold']}/{row['places']}",
                str(row["paid_orders"]),
                key=str(row["id"]),
            )
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))
        selected = self._selected()
        self.detail = await self.client.get(f"/staff/catalog/events/{selected}") if selected else None
        self.query_one("#event-detail", Static).update(self._describe(self.detail))

    @staticmethod
    def _describe(event: dict[str, Any] | None) -> str:
        if event is None:
            return "No events yet: n creates one from a venue."
        zone = event["timezone"]
        lines = [
            f"{event['title']} · {event['slug']} · {event['venue_name']} ({event['layout_name']})",
            f"Status {event['status']}, {event['phase'].replace('_', ' ')} · sale "
            f"{at_the_event(event['onsale_starts_at'], zone)} to "
            f"{at_the_event(event['onsale_ends_at'], zone)}",
            f"{event['sold']} sold, {event['held']} held of {event['places']}"
            f" · {event['paid_orders']} paid orders",
        ]
        for tier in event["tiers"]:
            price = tier["price"]
            lines.append(
                f"  {tier['name']}: {money(price['amount_minor'], price['currency'])}"
                f" · {tier['available']} left of {tier['places']}"
            )
        return "\n".join(lines)

    def _event(self) -> dict[str, Any] | None:
        selected = self._selected()
        if selected is None or self.detail is None or self.detail["id"] != selected:
            self.tell("Wait for the event's details to load, then try again.", error=True)
            return None
        return self.detail

    # --- acts ---------------------------------------------------------------------------

    @work(group="act", exit_on_error=False)
    async def _send(self, method: str, path: str, body: dict[str, Any] | None, done: str) -> None:
        try:
            if method == "PATCH":
                answer = await self.client.patch(path, body or {})
            else:
                answer = await self.client.post(path, body)
        except (Unreachable, ApiProblem) as error:
            problems = error.body.get("problems") if isinstance(error, ApiProblem) else None
            self.tell(f"Nothing changed: {'; '.join(problems[:3]) if problems else error}", error=True)
            return
        self.tell(done.format(**answer) if isinstance(answer, dict) else done)
        self.refresh_now()

    def _confirm_then(
        self, question: str, method: str, path: str, body: dict[str, Any] | None, done: str
    ) -> None:
        def confirmed(yes: bool | None) -> None:
            if yes:
                self._send(method, path, body, done)

        self.app.push_screen(ConfirmModal(question), confirmed)

    @work(group="act", exit_on_error=False)
    async def action_new(self) -> None:
        try:
            venues = (await self.client.get("/staff/catalog/venues"))["items"]
        except (Unreachable, ApiProblem) as error:
            self.tell(f"Cannot list the venues: {error}", error=True)
            return

        def created(body: dict[str, Any] | None) -> None:
            if body is not None:
                self._send(
                    "POST", "/staff/catalog/events", body, "Created {slug} as a draft: s puts it on sale."
                )

        self.app.push_screen(NewEventModal(venues), created)

    def action_prices(self) -> None:
        event = self._event()
        if event is None or not event["tiers"]:
            return
        currency = event["currency"]
        line = "; ".join(
            f"{t['name']}={price_text(t['price']['amount_minor'], currency)}" for t in event["tiers"]
        )

        def check(values: dict[str, str]) -> None:
            parse_prices(values["prices"], currency)

        def given(values: dict[str, str] | None) -> None:
            if values is not None:
                prices = parse_prices(values["prices"], currency)
                self._send(
                    "PATCH", f"/staff/catalog/events/{event['id']}/prices", {"prices": prices},
                    "Prices changed: new holds pay them; holds and orders made keep theirs.",
                )  # fmt: skip

        self.app.push_screen(
            FieldsModal(
                f"Prices of {event['title']} ({currency})", [("prices", "TIER=PRICE; ...", line)], check
            ),
            given,
        )

    def action_times(self) -> None:
        event = self._event()
        if event is None:
            return
        zone = event["timezone"]
        fields = [
            ("opens", f"Sale opens ({zone})", local_input(event["onsale_starts_at"], zone)),
            ("closes", f"Sale closes ({zone})", local_input(event["onsale_ends_at"], zone)),
        ]

        def check(values: dict[str, str]) -> None:
            typed_time(values["opens"], "Sale opens")
            typed_time(values["closes"], "Sale closes")

        def given(values: dict[str, str] | None) -> None:
            if values is not None:
                body = {
                    "onsale_starts_at": typed_time(values["opens"], "Sale opens"),
                    "onsale_ends_at": typed_time(values["closes"], "Sale closes"),
                }
                self._send("PATCH", f"/staff/catalog/events/{event['id']}", body, "On-sale times changed.")

        self.app.push_screen(FieldsModal(f"On-sale times of {event['title']}", fields, check), given)

    def action_on_sale(self) -> None:
        event = self._event()
        if event is not None:
            opens = at_the_event(event["onsale_starts_at"], event["timezone"])
            self._confirm_then(
                f"Put {event['title']} on sale? Fans can buy from {opens}.",
                "POST",
                f"/staff/catalog/events/{event['id']}/on-sale",
                {},
                "{title}: {status}, {phase} now.",
            )

    def action_pause(self) -> None:
        event = self._event()
        if event is not None:
            self._confirm_then(
                f"Pause the sale of {event['title']}? No new holds until it is resumed.",
                "POST",
                f"/staff/events/{event['id']}/pause",
                None,
                "Sale paused.",
            )

    def action_resume(self) -> None:
        event = self._event()
        if event is not None:
            self._send("POST", f"/staff/events/{event['id']}/resume", None, "Sale resumed.")

    def action_off_sale(self) -> None:
        event = self._event()
        if event is not None:
            self._confirm_then(
                f"Take {event['title']} off sale? No new holds until it is put on sale again.",
                "POST",
                f"/staff/catalog/events/{event['id']}/off-sale",
                None,
                "{title}: off sale.",
            )

    @work(group="act", exit_on_error=False)
    async def action_cancel(self) -> None:
        event = self._event()
        if event is None:
            return
        # Asked again now: the number the question states is the one at this moment.
        try:
            event = await self.client.get(f"/staff/catalog/events/{event['id']}")
        except (Unreachable, ApiProblem) as error:
            self.tell(f"Nothing changed: {error}", error=True)
            return
        orders = event["paid_orders"]
        in_flight = event["payments_in_flight"]
        question = (
            f"Cancel {event['title']}? {orders} paid order{'s' if orders != 1 else ''} will be refunded"
            " in full and their fans emailed"
            + (
                f"; {in_flight} payment{'s' if in_flight != 1 else ''} in flight refunded if they succeed"
                if in_flight
                else ""
            )
            + ". This cannot be undone."
        )
        self._confirm_then(
            question,
            "POST",
            f"/staff/catalog/events/{event['id']}/cancel",
            None,
            "{title}: cancelled; {orders_to_refund} orders being refunded.",
        )
