"""The Boxoffice operator console: one screen per task, keyboard-driven, over the staff API."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from console.tui.box_office import BoxOfficeScreen
from console.tui.client import ApiProblem, StaffClient, Unreachable
from console.tui.dashboard import DashboardScreen
from console.tui.events import EventsScreen
from console.tui.holds import HoldsScreen
from console.tui.on_call import OnCallScreen


class ConsoleApp(App[None]):
    CSS_PATH: ClassVar = ["app.tcss", "events.tcss"]
    TITLE = "Boxoffice console"
    MODES: ClassVar = {
        "dashboard": DashboardScreen,
        "box_office": BoxOfficeScreen,
        "holds": HoldsScreen,
        "on_call": OnCallScreen,
        "events": EventsScreen,
    }
    DEFAULT_MODE = "dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "switch_mode('dashboard')", "Dashboard"),
        Binding("b", "switch_mode('box_office')", "Box office"),
        Binding("h", "switch_mode('holds')", "Holds"),
        Binding("o", "switch_mode('on_call')", "On call"),
        Binding("v", "switch_mode('events')", "Catalog"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, client: StaffClient, *, refresh_seconds: float = 2.0, tickets_dir: Path) -> None:
        super().__init__()
        self.client = client
        self.refresh_seconds = refresh_seconds
        self.tickets_dir = tickets_dir
        # Whether the last call reached the API; screens show a banner while it is False.
        self.reachable = True
        # Walk-up sales held but not paid: released when the console closes.
        self.open_sales: set[str] = set()

    async def action_quit(self) -> None:
        await self.release_open_sales()
        self.exit()

    async def release_open_sales(self) -> None:
        """An abandoned till must not keep seats from everyone else until its holds expire."""
        for sale_id in list(self.open_sales):
            try:
                await self.client.delete(f"/staff/sales/{sale_id}")
            except (Unreachable, ApiProblem):
                continue  # the hold still expires by itself at its deadline
            self.open_sales.discard(sale_id)

    async def on_unmount(self) -> None:
        # However the console ends (q, Ctrl-C, a crash), an unpaid sale is let go.
        await self.release_open_sales()
        await self.client.aclose()
