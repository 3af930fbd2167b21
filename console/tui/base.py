"""What every console screen shares: the connection banner, and polling that never blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from console.tui.client import ApiProblem, StaffClient, Unreachable

if TYPE_CHECKING:
    from console.tui.app import ConsoleApp


class Banner(Static):
    """Hidden while the API answers; a red line naming the problem when it does not."""

    def show_problem(self, message: str) -> None:
        self.update(message)
        self.add_class("visible")

    def clear(self) -> None:
        self.update("")
        self.remove_class("visible")


class ConsoleScreen(Screen[None]):
    """A screen that refreshes itself every ``app.refresh_seconds`` in a background worker.

    ``load`` (async, in the subclass) fetches and renders. While the API is unreachable the
    last picture stays on screen under a banner, and the next tick tries again, so the
    console recovers by itself when the API comes back.
    """

    polls: ClassVar[bool] = True

    @property
    def console(self) -> ConsoleApp:
        from console.tui.app import ConsoleApp

        assert isinstance(self.app, ConsoleApp)
        return self.app

    @property
    def client(self) -> StaffClient:
        return self.console.client

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        yield Banner(id="banner")
        yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        raise NotImplementedError

    def on_mount(self) -> None:
        self.refresh_now()
        if self.polls:
            self.set_interval(self.console.refresh_seconds, self.refresh_now)

    def on_screen_resume(self) -> None:
        self.refresh_now()

    def refresh_now(self) -> None:
        self._poll()

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def _poll(self) -> None:
        banner = self.query_one(Banner)
        try:
            await self.load()
        except Unreachable as error:
            banner.show_problem(
                f"API unreachable: {error}. Retrying every {self.console.refresh_seconds:g} s."
            )
            self.console.reachable = False
            return
        except ApiProblem as problem:
            banner.show_problem(f"{problem.title}: {problem.detail}")
            return
        banner.clear()
        self.console.reachable = True

    async def load(self) -> None:
        raise NotImplementedError

    def tell(self, message: str, *, error: bool = False) -> None:
        self.notify(message, severity="error" if error else "information", timeout=6)
