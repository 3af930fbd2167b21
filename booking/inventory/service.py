"""The guarded statements over ``inventory_units``: claim, extend, release, expire, sell, return.

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

from psycopg import errors as pg_errors
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

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


async def claim_seats(
    session: AsyncSession,
    *,
    event_id: uuid.UUID,
    seat_ids: Sequence[int],
    hold_id: uuid.UUID,
    held_until: dt.datetime,
) -> list[ClaimedUnit]:
    """Hold exactly these seats of one event for ``hold_id``, all or none.

    The claimable rows are locked in id order before the guarded update, so two buyers
    reaching for overlapping seats queue instead of deadlocking, and seats someone else
    already has are not locked (or waited for) at all.

    Raises (the caller must then roll back, undoing the seats this statement did take):
        UnknownSeats: some ids are not seats of this event.
        SeatsTaken: some seats are held, sold or blocked; the error names them.
        InventoryBusy: the seats stayed locked by other buyers past the lock timeout.
    """
    wanted = sorted(set(seat_ids))
    locked = (
        select(U.id)
        .where(U.event_id == event_id, U.seat_id.in_(wanted), guard(Move.CLAIM))
        .order_by(U.id)
        .with_for_update()
        .cte("locked")
    )
    statement = (
        update(U)
        .where(U.id.in_(select(locked.c.id)), guard(Move.CLAIM))
        .values(**values(Move.CLAIM, hold_id=hold_id, held_until=held_until))
        .returning(U.id, U.seat_id, U.price_tier_id)
    )
    async with busy_is_retryable():
        rows = (await session.execute(statement)).all()
    claimed = [ClaimedUnit(unit_id, seat_id, tier_id) for unit_id, seat_id, tier_id in rows]
    if len(claimed) < len(wanted):
        # Only on failure: tell seats that do not exist here from seats someone else has.
        known = set(
            (
                await session.scalars(select(U.seat_id).where(U.event_id == event_id, U.seat_id.in_(wanted)))
            ).all()
        )
        if unknown := [seat for seat in wanted if seat not in known]:
            raise UnknownSeats(unknown)
        got = {unit.seat_id for unit in claimed}
        raise SeatsTaken([seat for seat in wanted if seat not in got])
    return claimed


async def claim_general_admission(
    session: AsyncSession,
    *,
    event_id: uuid.UUID,
    tier_id: uuid.UUID,
    quantity: int,
    hold_id: uuid.UUID,
    held_until: dt.datetime,
) -> list[ClaimedUnit]:
    """Hold ``quantity`` places of a GA tier, all or none.

    Places are picked with ``FOR UPDATE SKIP LOCKED``: concurrent buyers take disjoint rows
    and never wait on one another or on a counter row. They are picked lowest id first, so
    which places a buyer gets depends only on what is free, never on where PostgreSQL
    happened to put the row versions.

    Raises:
        SoldOut: no place of the tier is free.
        NotEnoughLeft: some are free, fewer than ``quantity`` (the caller must roll back).
    """
    picked = (
        select(U.id)
        .where(U.event_id == event_id, U.price_tier_id == tier_id, guard(Move.CLAIM))
        .order_by(U.id)
        .limit(quantity)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    statement = (
        update(U)
        .where(U.id.in_(select(picked.c.id)), guard(Move.CLAIM))
        .values(**values(Move.CLAIM, hold_id=hold_id, held_until=held_until))
        .returning(U.id, U.seat_id, U.price_tier_id)
    )
    rows = (await session.execute(statement)).all()
    if len(rows) < quantity:
        # Counted after our own claim: ours are held now, so add them back.
        free = await count_claimable(session, event_id=event_id, tier_id=tier_id)
        if free + len(rows) == 0:
            raise SoldOut()
        raise NotEnoughLeft(free + len(rows))
    return [ClaimedUnit(unit_id, seat_id, tier) for unit_id, seat_id, tier in rows]


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
