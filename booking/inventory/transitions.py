"""The inventory state machine as data.

Every change of a unit's state goes through one guarded UPDATE whose WHERE clause is built
here and nowhere else. A guard is evaluated by PostgreSQL on the row it is about to change
(after waiting for any concurrent writer of that row), so "check then act" is one atomic step;
and expiry is judged by the database clock (``now()``), never the application's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_

from booking.inventory.models import InventoryUnit, UnitState

U = InventoryUnit


class Move(enum.StrEnum):
    CLAIM = "claim"  # available (or held past its deadline) -> held by a new hold
    EXTEND = "extend"  # held by this hold and not yet expired -> held longer (renewal, payment)
    RELEASE = "release"  # held by this hold -> available (fan, staff, failed payment)
    EXPIRE = "expire"  # held by this hold past its deadline -> available (the tidy-up)
    SELL = "sell"  # held by this hold, or free again after its deadline -> sold
    RETURN = "return"  # sold in this order -> available (refund, cancellation)


def claimable() -> ColumnElement[bool]:
    """Free to take: available, or held by a hold whose deadline has passed."""
    return or_(
        U.state == UnitState.AVAILABLE,
        and_(U.state == UnitState.HELD, U.held_until < func.now()),
    )


def _held_by(hold_id: Any) -> ColumnElement[bool]:
    return and_(U.state == UnitState.HELD, U.hold_id == hold_id)


_FREE: dict[str, Any] = {"state": UnitState.AVAILABLE, "hold_id": None, "held_until": None, "order_id": None}


@dataclass(frozen=True)
class Transition:
    guard: Callable[[dict[str, Any]], ColumnElement[bool]]
    values: Callable[[dict[str, Any]], dict[str, Any]]


TRANSITIONS: dict[Move, Transition] = {
    Move.CLAIM: Transition(
        guard=lambda p: claimable(),
        values=lambda p: {"state": UnitState.HELD, "hold_id": p["hold_id"], "held_until": p["held_until"]},
    ),
    Move.EXTEND: Transition(
        guard=lambda p: and_(_held_by(p["hold_id"]), U.held_until > func.now()),
        values=lambda p: {"held_until": p["held_until"]},
    ),
    Move.RELEASE: Transition(guard=lambda p: _held_by(p["hold_id"]), values=lambda p: _FREE),
    Move.EXPIRE: Transition(
        guard=lambda p: and_(_held_by(p["hold_id"]), U.held_until <= func.now()), values=lambda p: _FREE
    ),
    # A payment that lands late keeps its seats if nobody took them meanwhile.
    Move.SELL: Transition(
        guard=lambda p: or_(_held_by(p["hold_id"]), claimable()),
        values=lambda p: {
            "state": UnitState.SOLD,
            "order_id": p["order_id"],
            "hold_id": None,
            "held_until": None,
        },
    ),
    Move.RETURN: Transition(
        guard=lambda p: and_(U.state == UnitState.SOLD, U.order_id == p["order_id"]), values=lambda p: _FREE
    ),
}


def guard(move: Move, **params: Any) -> ColumnElement[bool]:
    """The WHERE clause that makes ``move`` legal for a unit."""
    return TRANSITIONS[move].guard(params)


def values(move: Move, **params: Any) -> dict[str, Any]:
    """The columns ``move`` sets (always with ``updated_at``)."""
    return {**TRANSITIONS[move].values(params), "updated_at": func.now()}
