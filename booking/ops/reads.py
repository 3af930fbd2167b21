"""What operators list: holds and stuck payments, and the event an operator names.

Reads only, with nothing of the services that act: a listing command imports this module
alone, so `boxoffice holds list` loads the models it reads and not the payment, order and
ticket machinery. ``booking.ops.service`` re-exports every name here, so callers that also
act need one import.

Time is the database's: every "now" and "expired" is ``now()``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from booking.accounts.models import Fan, StaffKey
from booking.catalog.models import Event
from booking.errors import EventNotFound, InvalidRequest
from booking.holds.models import LIVE_STATES, Hold, HoldState
from booking.payments.models import RECONCILE_AFTER, Payment, PaymentState

MAX_LIST = 1000
# A payment still pending this long after it started is stuck even if its hold's grace has
# not run out yet (a create that timed out, a webhook that never came): the same threshold
# after which reconciliation asks the provider about it.
STUCK_AFTER = RECONCILE_AFTER


def overdue_holds() -> ColumnElement[bool]:
    """A hold still live by its state whose deadline has passed: what the sweeper tidies."""
    return and_(Hold.state.in_(list(LIVE_STATES)), Hold.expires_at <= func.now())


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST:
        raise InvalidRequest(f"The limit must be between 1 and {MAX_LIST}.")


async def require_event(session: AsyncSession, event_id: uuid.UUID) -> None:
    if await session.scalar(select(Event.id).where(Event.id == event_id)) is None:
        raise EventNotFound(f"There is no event {event_id}.")


async def resolve_event(session: AsyncSession, ref: str) -> uuid.UUID:
    """The id of the event ``ref`` names: its id, or its slug (what operators type).

    Raises:
        EventNotFound.
    """
    try:
        event_id = uuid.UUID(ref)
    except ValueError:
        found = await session.scalar(select(Event.id).where(Event.slug == ref))
        if found is None:
            raise EventNotFound(f"There is no event {ref!r}.") from None
        return found
    await require_event(session, event_id)
    return event_id


# --- holds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HoldRow:
    """One hold as an operator sees it. ``owner`` is the fan's email or the staff key's name;
    ``seconds_left`` is None for a hold that has ended and 0 for one past its deadline."""

    hold_id: uuid.UUID
    event_id: uuid.UUID
    event_title: str
    owner_kind: str
    owner: str
    state: HoldState
    quantity: int
    total_minor: int
    currency: str
    created_at: dt.datetime
    expires_at: dt.datetime
    seconds_left: int | None
    overdue: bool


async def find_holds(
    session: AsyncSession,
    *,
    event_id: uuid.UUID | None = None,
    fan_email: str | None = None,
    hold_id: uuid.UUID | None = None,
    expired_only: bool = False,
    state: HoldState | None = None,
    limit: int = 100,
) -> list[HoldRow]:
    """Holds matching every filter given, newest first. ``expired_only`` keeps holds still
    live by their state but past their deadline (what the sweeper will tidy); ``fan_email``
    matches whatever its case.

    Raises:
        InvalidRequest: ``limit`` is outside 1..1000.
    """
    check_limit(limit)
    overdue = overdue_holds()
    query = (
        select(
            Hold.id,
            Hold.event_id,
            Event.title,
            Fan.email,
            StaffKey.name,
            Hold.state,
            Hold.quantity,
            Hold.total_minor,
            Hold.currency,
            Hold.created_at,
            Hold.expires_at,
            overdue,
            func.now(),
        )
        .join(Event, Event.id == Hold.event_id)
        .outerjoin(Fan, Fan.id == Hold.fan_id)
        .outerjoin(StaffKey, StaffKey.id == Hold.staff_key_id)
        .order_by(Hold.created_at.desc(), Hold.id)
        .limit(limit)
    )
    if event_id is not None:
        query = query.where(Hold.event_id == event_id)
    if hold_id is not None:
        query = query.where(Hold.id == hold_id)
    if fan_email is not None:
        query = query.where(func.lower(Fan.email) == fan_email.strip().lower())
    if state is not None:
        query = query.where(Hold.state == state)
    if expired_only:
        query = query.where(overdue)
    rows = (await session.execute(query)).all()
    return [
        HoldRow(
            hold_id=hid,
            event_id=eid,
            event_title=title,
            owner_kind="fan" if email is not None else "staff",
            owner=email if email is not None else key_name,
            state=hold_state,
            quantity=quantity,
            total_minor=total,
            currency=currency,
            created_at=created_at,
            expires_at=expires_at,
            seconds_left=(
                max(0, int((expires_at - now).total_seconds())) if hold_state in LIVE_STATES else None
            ),
            overdue=bool(late),
        )
        for (
            hid,
            eid,
            title,
            email,
            key_name,
            hold_state,
            quantity,
            total,
            currency,
            created_at,
            expires_at,
            late,
            now,
        ) in rows
    ]


# --- stuck orders ------------------------------------------------------------------------


@dataclass(frozen=True)
class StuckOrder:
    """A hold whose payment has not settled: in ``paying`` past its payment deadline, or with
    a payment pending longer than the threshold. ``age_seconds`` counts from the payment's
    start (from the deadline when no pending payment is left)."""

    hold_id: uuid.UUID
    payment_id: uuid.UUID | None
    event_id: uuid.UUID
    event_title: str
    buyer: str
    hold_state: HoldState
    amount_minor: int
    currency: str
    provider: str | None
    payment_state: str | None
    deadline: dt.datetime
    overdue: bool
    age_seconds: int


async def stuck_orders(
    session: AsyncSession, *, older_than: dt.timedelta = STUCK_AFTER, limit: int = 100
) -> list[StuckOrder]:
    """Payments an operator should settle, oldest first.

    Raises:
        InvalidRequest: ``older_than`` is negative, or ``limit`` is outside 1..1000.
    """
    check_limit(limit)
    if older_than < dt.timedelta(0):
        raise InvalidRequest("older_than cannot be negative.")
    overdue = and_(Hold.state == HoldState.PAYING, Hold.expires_at <= func.now())
    since = func.coalesce(Payment.created_at, Hold.expires_at)
    rows = (
        await session.execute(
            select(
                Hold.id,
                Payment.id,
                Hold.event_id,
                Event.title,
                func.coalesce(Fan.email, StaffKey.name),
                Hold.state,
                func.coalesce(Payment.amount_minor, Hold.total_minor),
                func.coalesce(Payment.currency, Hold.currency),
                Payment.provider,
                Payment.state,
                Hold.expires_at,
                overdue,
                func.greatest(func.extract("epoch", func.now() - since), 0),
            )
            .join(Event, Event.id == Hold.event_id)
            .outerjoin(Fan, Fan.id == Hold.fan_id)
            .outerjoin(StaffKey, StaffKey.id == Hold.staff_key_id)
            # At most one pending payment per hold (a unique index): no duplicate rows.
            .outerjoin(Payment, and_(Payment.hold_id == Hold.id, Payment.state == PaymentState.PENDING))
            .where(or_(overdue, Payment.created_at <= func.now() - older_than))
            .order_by(since, Hold.id)
            .limit(limit)
        )
    ).all()
    return [
        StuckOrder(
            hold_id=hid,
            payment_id=pid,
            event_id=eid,
            event_title=title,
            buyer=buyer or "",
            hold_state=hold_state,
            amount_minor=int(amount),
            currency=currency,
            provider=provider.value if provider is not None else None,
            payment_state=payment_state.value if payment_state is not None else None,
            deadline=deadline,
            overdue=bool(late),
            age_seconds=int(age),
        )
        for (
            hid,
            pid,
            eid,
            title,
            buyer,
            hold_state,
            amount,
            currency,
            provider,
            payment_state,
            deadline,
            late,
            age,
        ) in rows
    ]
