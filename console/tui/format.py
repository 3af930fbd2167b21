"""How the console writes amounts and times."""

from __future__ import annotations

import datetime as dt

from booking.money import money

__all__ = ["money", "when"]


def when(iso: str | None) -> str:
    """An API timestamp as local wall-clock time, for people at a till."""
    if not iso:
        return "-"
    return dt.datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")
