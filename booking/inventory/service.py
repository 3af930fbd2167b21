"""The guarded statements over ``inventory_units``: extend, release, expire, sell, return (the
claim is part of the hold's own statement, ``booking.holds.service._claim_sql``).

Each is one UPDATE whose WHERE clause comes from ``transitions``. None reads a state in Python
and writes it back. Callers run them inside their own transaction and decide by the number of
rows changed; the engine's ``lock_timeout`` turns a pile-up into a clear, retryable error.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn

from psycopg import errors as pg_errors
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from booking import metrics
from booking.errors import InventoryBusy, NotEnoughLeft, SeatsTaken, SoldOut, UnknownSeats
from booking.inventory.models import InventoryUnit as U
from booking.inventory.transitions import Move, guard, values


@dataclass(frozen=True)
class ClaimedUnit:
    unit_id: int
    seat_id: int | None
    price_tier_id: uuid.UUID


def is_busy(error: DBAPIError) -> bool:
    return isinstance(error.orig, pg_errors.LockNotAvailable | pg_errors.DeadlockDetected)


@asynccontextmanager
async def busy_is_retryable() -> AsyncIterator[None]:
    """Turn a lock wait past ``lock_timeout`` (or a deadlock) into InventoryBusy, which
    callers answer as "busy, retry" instead of a server error."""
    try:
        yield
    except DBAPIError as error:
        if is_busy(error):
            raise InventoryBusy() from None
        raise


async def explain_missing_seats(
    session: AsyncSession, event_id: uuid.UUID, seat_ids: Sequence[int], claimed: Sequence[ClaimedUnit]
) -> NoReturn:
    """Only on failure: tell seats that do not exist here from seats someone else has.

    Raises:
        UnknownSeats, SeatsTaken.
    """
    wanted = sorted(set(seat_ids))
    known = set(
        (await session.scalars(select(U.seat_id).where(U.event_id == event_id, U.seat_id.in_(wanted)))).all()
    )
    if unknown := [seat for seat in wanted if seat not in known]:
        raise UnknownSeats(unknown)
    got = {unit.seat_id for unit in claimed}
    metrics.OVERSELL_REJECTIONS.labels("seat_taken", "hold").inc()
    raise SeatsTaken([seat for seat in wanted if seat not in got])


async def explain_ga_shortfall(
    session: AsyncSession, event_id: uuid.UUID, tier_id: uuid.UUID, claimed: int
) -> NoReturn:
    """Only on failure: how many places are left, counted after our own partial claim (ours
    are held now, so they are added back).

    Raises:
        SoldOut, NotEnoughLeft.
    """
    free = await count_claimable(session, event_id=event_id, tier_id=tier_id) + claimed
    metrics.OVERSELL_REJECTIONS.labels("sold_out", "hold").inc()
    if free == 0:
        raise SoldOut()
    raise NotEnoughLeft(free)


async def count_claimable(session: AsyncSession, *, event_id: uuid.UUID, tier_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(U)
        .where(U.event_id == event_id, U.price_tier_id == tier_id, guard(Move.CLAIM))
    )
    return int(count or 0)


async def move_hold_units(
    session: AsyncSession, move: Move, *, hold_id: uuid.UUID, held_until: dt.datetime | None = None
) -> list[int]:
    """EXTEND, RELEASE or EXPIRE the units a hold has; returns the ids that moved.

    Rows are locked in id order, like every other statement here, so this never deadlocks
    with a buyer claiming the same (expired) seats.

    Raises:
        InventoryBusy: the units stayed locked past the lock timeout.
    """
    assert move in (Move.EXTEND, Move.RELEASE, Move.EXPIRE)
    locked = select(U.id).where(U.hold_id == hold_id).order_by(U.id).with_for_update().cte("locked")
    statement = (
        update(U)
        .where(U.id.in_(select(locked.c.id)), guard(move, hold_id=hold_id))
        .values(**values(move, hold_id=hold_id, held_until=held_until))
        .returning(U.id)
    )
    async with busy_is_retryable():
        return list((await session.scalars(statement)).all())


async def sell_units(
    session: AsyncSession, *, unit_ids: Sequence[int], hold_id: uuid.UUID, order_id: uuid.UUID
) -> list[int]:
    """Mark a hold's units sold to ``order_id``: those it still holds, or that are free again
    after its deadline passed. Returns the ids sold; fewer than asked means some were taken.

    Raises:
        InventoryBusy: the units stayed locked past the lock timeout.
    """
    locked = select(U.id).where(U.id.in_(list(unit_ids))).order_by(U.id).with_for_update().cte("locked")
    statement = (
        update(U)
        .where(U.id.in_(select(locked.c.id)), guard(Move.SELL, hold_id=hold_id))
        .values(**values(Move.SELL, order_id=order_id))
        .returning(U.id)
    )
    async with busy_is_retryable():
        return list((await session.scalars(statement)).all())


async def return_units(session: AsyncSession, *, order_id: uuid.UUID) -> list[int]:
    """Put an order's sold units back on sale (refund, cancellation).

    Raises:
        InventoryBusy: the units stayed locked past the lock timeout.
    """
    locked = select(U.id).where(U.order_id == order_id).order_by(U.id).with_for_update().cte("locked")
    statement = (
        update(U)
        .where(U.id.in_(select(locked.c.id)), guard(Move.RETURN, order_id=order_id))
        .values(**values(Move.RETURN))
        .returning(U.id)
    )
    async with busy_is_retryable():
        return list((await session.scalars(statement)).all())
