"""How the console writes amounts and times."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from booking.money import money

__all__ = ["at_the_event", "money", "when"]


def when(iso: str | None) -> str:
    """An API timestamp as local wall-clock time, for people at a till."""
    if not iso:
        return "-"
    return dt.datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")


def at_the_event(iso: str, timezone: str) -> str:
    """An API timestamp as the wall clock where the event is (``2026-12-10 19:00 CET``): a
    sale opens at the venue's time, whatever the time where the console runs. A zone this
    machine does not know is shown as UTC, and says so."""
    moment = dt.datetime.fromisoformat(iso)
    try:
        zone: dt.tzinfo = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
