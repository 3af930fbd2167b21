"""An event's life as data: the moves people make, and the phase fans see.

What is stored (``events.status``) is only what a person decided: a draft, put on sale,
paused by on-call, taken off sale by the organiser, cancelled. Everything else follows from
the times and the inventory, judged by the database clock when read:

- ``scheduled``: on sale, before the on-sale time. Stored, it would need a job to flip it at
  the on-sale moment, the busiest second of an event's life, and a stopped worker would keep
  the sale shut. The claim statement already opens the sale by the window alone.
- ``sold_out``: on sale and open, but no place a new hold could claim. Holds expire and
  orders are refunded, so it comes and goes by itself; the claim statement is the authority.
- ``off_sale``: taken off sale, or on sale past the end of the on-sale window.
- ``ended``: the event is over (or was marked completed).

So the phase is one SQL expression over the row (``phase_sql``), read with the event
wherever it is shown: one rule, never a second copy in Python.
"""

from __future__ import annotations

import enum

from sqlalchemy import ColumnElement, case, exists, func, literal, or_

from booking.catalog.models import Event, EventStatus
from booking.inventory.models import InventoryUnit, UnitState

St = EventStatus


class Phase(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    ON_SALE = "on_sale"
    SOLD_OUT = "sold_out"
    PAUSED = "paused"
    OFF_SALE = "off_sale"
    ENDED = "ended"
    CANCELLED = "cancelled"


# move -> (statuses it may start from, status it ends in). Each move is one guarded UPDATE
# whose WHERE clause is its sources (``booking.catalog.admin``; pause and resume are
# on-call's, in ``booking.ops.service``).
EVENT_MOVES: dict[str, tuple[frozenset[EventStatus], EventStatus]] = {
    # A draft goes on sale (shown as scheduled until its on-sale time); so does an event
    # taken off sale, when the organiser changes their mind.
    "put_on_sale": (frozenset({St.DRAFT, St.OFF_SALE}), St.ON_SALE),
    "pause": (frozenset({St.ON_SALE}), St.PAUSED),
    "resume": (frozenset({St.PAUSED}), St.ON_SALE),
    "take_off_sale": (frozenset({St.ON_SALE, St.PAUSED}), St.OFF_SALE),
    # Anything not over yet; a cancelled event stays cancelled.
    "cancel": (frozenset({St.DRAFT, St.ON_SALE, St.PAUSED, St.OFF_SALE}), St.CANCELLED),
}

# What may still be edited: details, times, prices, tiers (tiers also need no hold yet).
EDITABLE = frozenset({St.DRAFT, St.ON_SALE, St.PAUSED, St.OFF_SALE})


def _claimable_left() -> ColumnElement[bool]:
    # Two probes rather than one OR: each is served by an index of its own (the free places,
    # and the claim index for holds past their deadline).
    unit = InventoryUnit
    free = exists().where(unit.event_id == Event.id, unit.state == UnitState.AVAILABLE)
    lapsed = exists().where(
        unit.event_id == Event.id, unit.state == UnitState.HELD, unit.held_until < func.now()
    )
    return or_(free, lapsed)


def phase_sql() -> ColumnElement[str]:
    """The phase of each ``events`` row, by the database clock (see the module's docstring)."""
    now = func.now()
    return case(
        (Event.status == St.CANCELLED, literal(Phase.CANCELLED.value)),
        (or_(Event.status == St.COMPLETED, Event.ends_at <= now), literal(Phase.ENDED.value)),
        (Event.status == St.DRAFT, literal(Phase.DRAFT.value)),
        (Event.status == St.PAUSED, literal(Phase.PAUSED.value)),
        (or_(Event.status == St.OFF_SALE, Event.onsale_ends_at <= now), literal(Phase.OFF_SALE.value)),
        (now < Event.onsale_starts_at, literal(Phase.SCHEDULED.value)),
        (~_claimable_left(), literal(Phase.SOLD_OUT.value)),
        else_=literal(Phase.ON_SALE.value),
    )
