"""Holds for fans: take seats or GA places for a few minutes, renew, release."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from api.admission import require_admission
from api.auth import SECURITY
from booking.accounts.fans import Principal
from booking.errors import InvalidRequest
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import GASelection, Owner, SeatSelection, Selection
from booking.logs import bind, get_logger

log = get_logger("boxoffice.api.holds")


class Money(msgspec.Struct, frozen=True):
    amount_minor: int
    currency: str


# Seat ids are positive bigints; anything outside that is refused here, not by the driver.
SeatId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class HoldRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Either ``seat_ids`` (reserved seating, all or none) or ``tier_id`` and ``quantity``
    (general admission)."""

    event_id: uuid.UUID
    seat_ids: Annotated[list[SeatId], msgspec.Meta(max_length=100)] | None = None
    tier_id: uuid.UUID | None = None
    quantity: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None


class HoldItemOut(msgspec.Struct, frozen=True):
    unit_id: int
    seat_id: int | None
    tier_id: uuid.UUID
    price: Money


class HoldOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    event_id: uuid.UUID
    state: str
    quantity: int
    total: Money
    renewals: int
    created_at: dt.datetime
    expires_at: dt.datetime
    items: list[HoldItemOut]


def hold_out(view: holds.HoldView) -> HoldOut:
    return HoldOut(
        id=view.id,
        event_id=view.event_id,
        state=view.state.value,
        quantity=view.quantity,
        total=Money(view.total_minor, view.currency),
        renewals=view.renewals,
        created_at=view.created_at,
        expires_at=view.expires_at,
        items=[
            HoldItemOut(
                unit_id=item.unit_id,
                seat_id=item.seat_id,
                tier_id=item.price_tier_id,
                price=Money(item.price_minor, item.currency),
            )
            for item in view.items
        ],
    )


def policy_of(request: Request[Any, Any, Any]) -> HoldPolicy:
    return HoldPolicy.from_settings(request.app.state.settings)


def _selection(data: HoldRequest) -> Selection:
    if data.seat_ids is not None and data.tier_id is None and data.quantity is None:
        return SeatSelection(tuple(data.seat_ids))
    if data.seat_ids is None and data.tier_id is not None and data.quantity is not None:
        return GASelection(data.tier_id, data.quantity)
    raise InvalidRequest("Send either seat_ids, or tier_id with quantity.")


class HoldController(Controller):
    path = "/holds"
    tags = ["holds"]
    security = SECURITY

    @post(
        "/",
        status_code=201,
        summary="Hold seats or GA places",
        description=(
            "Reserved seats are held all or none; GA places by tier and quantity. The hold lasts "
            "a few minutes (see `expires_at`). Requires an `Idempotency-Key` header: a retry "
            "with the same key returns the same hold. While the event sells through a waiting "
            "room, send your admission token as the `Admission-Token` header (403 without a valid "
            "one; see docs/waiting-room.md)."
        ),
        opt={"idempotency_key": "required", "rate_limit": "hold"},
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        data: JSONBody[HoldRequest],
    ) -> HoldOut:
        selection = _selection(data)
        # An event selling through a waiting room needs the fan's admission (api.admission).
        await require_admission(request, db_session, fan.fan_id, data.event_id)
        view = await holds.create_hold(
            db_session,
            owner=Owner(fan_id=fan.fan_id),
            event_id=data.event_id,
            selection=selection,
            policy=policy_of(request),
        )
        bind(hold_id=view.id)
        log.info("hold created", event_id=view.event_id, quantity=view.quantity)
        return hold_out(view)

    @get("/{hold_id:uuid}", summary="A hold of yours")
    async def show(
        self,
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        hold_id: FromPath[uuid.UUID],
    ) -> HoldOut:
        return hold_out(await holds.get_hold(db_session, hold_id, Owner(fan_id=fan.fan_id)))

    @post(
        "/{hold_id:uuid}/renew",
        status_code=200,
        summary="Renew a hold",
        description="Adds the hold time again from now; at most twice, never past 15 minutes from creation.",
        opt={"rate_limit": "renew"},
    )
    async def renew(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        hold_id: FromPath[uuid.UUID],
    ) -> HoldOut:
        view = await holds.renew_hold(
            db_session, owner=Owner(fan_id=fan.fan_id), hold_id=hold_id, policy=policy_of(request)
        )
        return hold_out(view)

    @delete(
        "/{hold_id:uuid}",
        status_code=200,
        summary="Release a hold (its seats go back on sale)",
        # Under overload, giving seats back is served before new holds (api.overload).
        opt={"admission": "finish"},
    )
    async def release(
        self,
        db_session: NamedDependency[AsyncSession],
        fan: NamedDependency[Principal],
        hold_id: FromPath[uuid.UUID],
    ) -> HoldOut:
        bind(hold_id=hold_id)
        view = await holds.release_hold(db_session, hold_id=hold_id, owner=Owner(fan_id=fan.fan_id))
        log.info("hold released", event_id=view.event_id, quantity=view.quantity)
        return hold_out(view)
