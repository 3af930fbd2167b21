"""The waiting room's gate on the buying path: ``POST /holds`` and ``POST /holds/{id}/checkout``
on an event whose waiting room is active need the fan's admission token, sent as the
``Admission-Token`` header (``booking.waiting_room.service.check_admission`` decides).

An event without an active room costs nothing here beyond a dictionary look-up in the
process's copy of the rooms (read from PostgreSQL about once a second): it keeps selling
whether Redis answers or not. Box-office sales are not gated.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request
from sqlalchemy.ext.asyncio import AsyncSession

from booking.keys import SigningKeys
from booking.waiting_room import service as rooms

ADMISSION_TOKEN = "Admission-Token"  # noqa: S105 - a header name, not a secret


def admission_token(request: Request[Any, Any, Any]) -> str | None:
    """The token the request carries; a blank header counts as none."""
    token = request.headers.get(ADMISSION_TOKEN, "").strip()
    return token or None


async def require_admission(
    request: Request[Any, Any, Any], session: AsyncSession, fan_id: uuid.UUID, event_id: uuid.UUID
) -> None:
    """Raises: what ``check_admission`` raises, for an event whose room is active."""
    state = request.app.state
    keys: SigningKeys = state.signing_keys
    await rooms.check_admission(
        session,
        state.redis,
        event_id=event_id,
        fan_id=fan_id,
        token=admission_token(request),
        verifying_keys=keys.verifying_keys(),
        rooms=state.waiting_rooms,
        breaker=state.redis_breaker,
    )


async def require_admission_for_hold(
    request: Request[Any, Any, Any], fan_id: uuid.UUID, hold_id: uuid.UUID
) -> None:
    """The gate for paying for a hold: on its event's room. A short session of its own (the
    checkout holds none across the provider call); with no room enabled anywhere, not even
    the hold is read. A hold that is not the fan's passes: the checkout answers for it.

    Raises: as ``require_admission``."""
    state = request.app.state
    cache: rooms.RoomCache = state.waiting_rooms
    async with state.sessionmaker() as session:
        if not await cache.rooms(session):
            return
        event_id = await rooms.hold_event(session, hold_id, fan_id)
        if event_id is not None:
            await require_admission(request, session, fan_id, event_id)
