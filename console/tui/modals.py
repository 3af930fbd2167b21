"""Dialogs: confirmation of destructive acts, and what a till asks for at payment."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import ClassVar, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from booking.money import minor_places
from console.tui.format import money

T = TypeVar("T")


class Dialog(ModalScreen[T]):
    """A dialog over a screen: Escape cancels it, Enter gives its answer.

    The keys that close a dialog are priority bindings, acted on by the app the moment they
    arrive. An ordinary binding waits until the focused widget has passed the key on, and a
    key typed in that moment went to the closing dialog (into its input) and was lost: the
    till's next key after Escape did nothing."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", priority=True),
        Binding("enter", "submit", "OK", priority=True),
    ]

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        """Close with the answer when there is one; the dialog stays open otherwise."""
        raise NotImplementedError


class ConfirmModal(Dialog[bool]):
    """Yes or no. y confirms; n or Escape refuses; Enter presses the focused button, No at
    first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", priority=True),
        Binding("n", "answer(False)", "No", priority=True),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button("Yes", id="yes", variant="error")
                yield Button("No", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def action_cancel(self) -> None:
        self.dismiss(False)

    def action_submit(self) -> None:
        focused = self.focused
        self.dismiss(isinstance(focused, Button) and focused.id == "yes")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


# Far above any till's drawer; also keeps the arithmetic below away from huge exponents.
MAX_TENDERED = Decimal(10) ** 9


def parse_amount(text: str, currency: str) -> int | None:
    """What was typed, in the currency's minor units (``"50"`` or ``"50.00"`` EUR → 5000,
    ``"5000"`` JPY → 5000); None for anything that is not an amount of that currency."""
    places = minor_places(currency)
    try:
        value = Decimal(text.strip().replace(",", ""))
        if not value.is_finite() or value < 0 or value > MAX_TENDERED:
            return None
        if value != value.quantize(Decimal(1).scaleb(-places)):
            return None  # more decimals than the currency has
        return int(value.scaleb(places))
    except InvalidOperation:
        return None


class AskModal(Dialog[str | None]):
    """One line of input, given with Enter; Escape cancels (None)."""

    def __init__(self, question: str, placeholder: str = "") -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            yield Input(placeholder=self.placeholder, id="answer")
            yield Static(id="hint", classes="hint")

    def action_submit(self) -> None:
        answer = self.query_one("#answer", Input).value.strip()
        if answer:
            self.dismiss(answer)


class CashModal(Dialog[int | None]):
    """Cash tendered, in the sale's currency; shows the change due as it is typed, and only
    accepts (Enter) an amount that covers the total. Escape cancels (None)."""

    def __init__(self, total_minor: int, currency: str) -> None:
        super().__init__()
        self.total_minor = total_minor
        self.currency = currency

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Total {money(self.total_minor, self.currency)}. Cash tendered:", classes="question")
            yield Input(placeholder="e.g. 100 or 100.00", id="tendered")
            yield Static(id="change", classes="hint")

    @on(Input.Changed)
    def changed(self, event: Input.Changed) -> None:
        tendered = parse_amount(event.value, self.currency)
        hint = self.query_one("#change", Static)
        if tendered is None:
            hint.update("Type an amount.")
        elif tendered < self.total_minor:
            hint.update(f"Short by {money(self.total_minor - tendered, self.currency)}.")
        else:
            hint.update(f"Change due {money(tendered - self.total_minor, self.currency)}.")

    def action_submit(self) -> None:
        tendered = parse_amount(self.query_one("#tendered", Input).value, self.currency)
        if tendered is not None and tendered >= self.total_minor:
            self.dismiss(tendered)
