"""SVG snapshots of the console, compared as text.

``assert_snapshot(app, name)`` exports the screen as SVG (Textual's own screenshot), blanks
out what changes from run to run (wall-clock times; the export's id, which is a hash of the
content), and compares it with ``tests/console/snapshots/<name>.svg``. With
``BOXOFFICE_UPDATE_SNAPSHOTS=1`` it writes the file instead: look at it before keeping it.
A mismatch leaves the new picture beside the test's temporary files and names both.

Snapshots are only as stable as their data: tests give them fixed names and far-off fixed
dates, never "now plus a day".
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from textual.pilot import Pilot

SNAPSHOTS = Path(__file__).with_name("snapshots")
UPDATE_ENV = "BOXOFFICE_UPDATE_SNAPSHOTS"
VOLATILE = (
    # The header's clock, "As of", a hold's deadline: local times to the second.
    (re.compile(r"\b\d{2}:\d{2}:\d{2}\b"), "00:00:00"),
    # Rich names the SVG's styles and clip paths after a hash of everything drawn.
    (re.compile(r"terminal-\d+"), "terminal"),
)


def normalised(svg: str) -> str:
    for pattern, replacement in VOLATILE:
        svg = pattern.sub(replacement, svg)
    return svg


def visible_text(svg: str) -> str:
    """The characters an SVG screenshot draws, tags removed: for asserting that a piece of
    text is on screen whole."""
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


async def assert_snapshot(pilot: Pilot[None], name: str, scratch: Path) -> str:
    """Compare the screen, once drawn, with the stored snapshot ``name``; returns the SVG as
    exported."""
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    svg = pilot.app.export_screenshot(title=name, simplify=True)
    stored = SNAPSHOTS / f"{name}.svg"
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        stored.write_text(normalised(svg), encoding="utf-8")
        return svg
    assert stored.exists(), f"no snapshot {stored}: run with {UPDATE_ENV}=1 to write it"
    if normalised(svg) != stored.read_text(encoding="utf-8"):
        actual = scratch / f"{name}.svg"
        actual.write_text(normalised(svg), encoding="utf-8")
        raise AssertionError(f"the screen differs from {stored}; it is now {actual}")
    return svg
