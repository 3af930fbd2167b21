"""How long holds last and how many tickets one buyer may hold: one value object, read from
settings by entry points and passed to the hold services."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from booking.holds.models import MAX_RENEWALS
from booking.settings import Settings

MAX_LIFETIME = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class HoldPolicy:
    ttl: dt.timedelta = dt.timedelta(minutes=8)
    max_renewals: int = MAX_RENEWALS
    # A hold never lives past this from its creation, however often it is renewed.
    max_lifetime: dt.timedelta = MAX_LIFETIME
    tickets_per_fan: int = 8
    payment_grace: dt.timedelta = dt.timedelta(minutes=10)
    # Staff sell to the walk-up queue without the fan cap; this only bounds one hold's size.
    units_per_staff_hold: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> HoldPolicy:
        return cls(
            ttl=dt.timedelta(seconds=settings.hold_ttl_seconds),
            tickets_per_fan=settings.max_tickets_per_fan,
            payment_grace=dt.timedelta(seconds=settings.payment_grace_seconds),
        )
