"""Export the console's screens as SVG for docs/operators.md.

Against a running `boxoffice up` (or --api/--key): opens each screen in a headless terminal
of 150 by 44 cells, waits for its data, and saves `docs/screens/<screen>.svg`. The box-office shot
holds two seats for a moment and abandons the sale afterwards, so the demo is left as found.

    .venv/bin/python docs/screens/make.py [--api URL] [--key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable

from booking.settings import get_settings
from console.local import CONSOLE_KEY_FILE
from console.stack import StackInfo
from console.tui.app import ConsoleApp
from console.tui.box_office import BoxOfficeScreen
from console.tui.client import StaffClient

HERE = Path(__file__).parent
SIZE = (150, 44)


async def _settle(pilot: Pilot[None], seconds: float = 1.5) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await pilot.pause(0.1)


async def shoot(api: str, key: str) -> None:
    app = ConsoleApp(StaffClient(api, key), refresh_seconds=1.0, tickets_dir=HERE / ".tickets")
    async with app.run_test(size=SIZE) as pilot:
        await _settle(pilot)
        app.save_screenshot("dashboard.svg", path=str(HERE))

        await pilot.press("b")
        await _settle(pilot)
        screen = app.screen
        assert isinstance(screen, BoxOfficeScreen)
        app.save_screenshot("box-office-events.svg", path=str(HERE))
        await pilot.press("enter")
        await _settle(pilot)
        grid = screen.query_one("#seats", DataTable)
        free = [where for where, seat in screen.seats.items() if seat["state"] == "available"][:2]
        for where in free:
            grid.move_cursor(row=where.row, column=where.column)
            await pilot.press("space")
        await pilot.press("s")
        await _settle(pilot)
        app.save_screenshot("box-office-sale.svg", path=str(HERE))
        await pilot.press("x", "y")
        await _settle(pilot, 1.0)

        await pilot.press("h")
        await _settle(pilot)
        app.save_screenshot("holds.svg", path=str(HERE))

        await pilot.press("o")
        await _settle(pilot)
        app.save_screenshot("on-call.svg", path=str(HERE))
        await pilot.press("q")


def main() -> None:
    settings = get_settings()
    info = StackInfo.read(settings.data_dir)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default=info.api_url if info else None)
    parser.add_argument("--key")
    args = parser.parse_args()
    key = args.key or (settings.data_dir / CONSOLE_KEY_FILE).read_text().strip()
    if not args.api:
        parser.error("no running `boxoffice up`: pass --api and --key")
    asyncio.run(shoot(args.api, key))


if __name__ == "__main__":
    main()
