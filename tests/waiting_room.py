"""Waiting-room test data: rooms on the factories' events, many fans at once, and a clock
the tests move by hand (every waiting-room verb takes ``now``)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Fan
from booking.waiting_room import service as rooms
from booking.waiting_room.service import RoomSettings

# The sale of every test room opens an hour from the real now, well inside the factories'
# on-sale window (which the database clock judges).
SALE_OPENS = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).replace(microsecond=0)
BEFORE = SALE_OPENS - dt.timedelta(minutes=10)


def at(seconds: float) -> dt.datetime:
    """``seconds`` after the sale opens (before it, when negative)."""
    return SALE_OPENS + dt.timedelta(seconds=seconds)


async def make_room(session: AsyncSession, event_id: uuid.UUID, **settings: Any) -> RoomSettings:
    """An enabled room opening at ``SALE_OPENS`` (fans may join any time before), with
    ``settings`` over those. Commits."""
    values: dict[str, Any] = {"enabled": True, "sale_opens_at": SALE_OPENS, "now": BEFORE} | settings
    room = await rooms.set_room(session, event_id, **values)
    await session.commit()
    return room


async def make_fans(session: AsyncSession, count: int) -> list[uuid.UUID]:
    """``count`` fans in one statement (no sign-in: the service takes fan ids). Commits."""
    tag = uuid.uuid4().hex[:8]
    ids = list(
        (
            await session.scalars(
                insert(Fan).returning(Fan.id, sort_by_parameter_order=True),
                [{"email": f"wr-{tag}-{n}@example.org", "password_hash": "x"} for n in range(count)],
            )
        ).all()
    )
    await session.commit()
    return ids


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists without ties."""
    n = len(xs)

    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(n), key=lambda i: values[i])
        out = [0] * n
        for rank, i in enumerate(order):
            out[i] = rank
        return out

    rx, ry = ranks(xs), ranks(ys)
    d2 = sum((a - b) ** 2 for a, b in zip(rx, ry, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))
