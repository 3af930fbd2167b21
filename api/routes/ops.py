"""On-call operations over HTTP: the dashboard, holds, stuck payments, refunds, pausing a sale.

Each handler parses, calls ``booking.ops.service`` and renders; the same verbs back the
``boxoffice holds|orders|sale`` commands.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from api.routes.holds import HoldOut, Money, hold_out
from api.routes.orders import OrderOut, order_out
from api.routes.waiting_room import WaitingRoomOut, room_out
from api.schemas import STORABLE_TEXT
from api.staff import BOX_OFFICE, ON_CALL, STAFF_SECURITY, audit_detail
from booking.accounts.staff import StaffPrincipal
from booking.errors import RefundNotFailed
from booking.holds.models import HoldState
from booking.ops import reads
from booking.ops import service as ops
from booking.payments import service as payments
from booking.payments.models import RefundState
from booking.payments.registry import Gateways
from booking.payments.service import Settlement
from booking.waiting_room import service as rooms

WATCHERS = ON_CALL + BOX_OFFICE


class EventDashboardOut(msgspec.Struct, frozen=True):
    event_id: uuid.UUID
    title: str
    status: str
    starts_at: dt.datetime
    capacity: int
    available: int
    held: int
    sold: int
    holds_last_minute: int
    holds_per_minute_5m: float
    orders_last_minute: int
    orders_per_minute_5m: float
    revenue: list[Money]
    expiring_soon: int
    stuck_paying: int


class RefundCountsOut(msgspec.Struct, frozen=True):
    pending: int
    submitted: int
    failed: int


class DashboardOut(msgspec.Struct, frozen=True):
    at: dt.datetime
    events: list[EventDashboardOut]
    expiring_soon: int
    stuck_paying: int
    # Refunds not paid back yet; a failed one needs on-call (GET /staff/refunds).
    refunds: RefundCountsOut
    # Every enabled waiting room of an event not over: its queue, shoppers, rate and ETA.
    waiting_rooms: list[WaitingRoomOut]


class RefundOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    payment_id: uuid.UUID
    hold_id: uuid.UUID
    order_id: uuid.UUID | None
    provider: str
    amount: Money
    state: str
    reason: str
    attempts: int
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class RefundList(msgspec.Struct, frozen=True):
    items: list[RefundOut]


class RefundRetriedOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    state: str


class HoldRowOut(msgspec.Struct, frozen=True):
    id: uuid.UUID
    event_id: uuid.UUID
    event_title: str
    # "fan" (owner is their email) or "staff" (owner is the staff key's name)
    owner_kind: str
    owner: str
    state: str
    quantity: int
    total: Money
    created_at: dt.datetime
    expires_at: dt.datetime
    # By the database clock; null once the hold has ended, 0 past its deadline.
    seconds_left: int | None
    overdue: bool


class HoldList(msgspec.Struct, frozen=True):
    items: list[HoldRowOut]


class ReleaseExpiredRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Without ``event_id``, every event's expired holds."""

    event_id: uuid.UUID | None = None


class ReleaseExpiredOut(msgspec.Struct, frozen=True):
    event_id: uuid.UUID | None
    released: int


class StuckOrderOut(msgspec.Struct, frozen=True):
    hold_id: uuid.UUID
    payment_id: uuid.UUID | None
    event_id: uuid.UUID
    event_title: str
    buyer: str
    hold_state: str
    amount: Money
    provider: str | None
    payment_state: str | None
    deadline: dt.datetime
    overdue: bool
    age_seconds: int


class StuckOrderList(msgspec.Struct, frozen=True):
    items: list[StuckOrderOut]


class SettlementOut(msgspec.Struct, frozen=True):
    payment_id: uuid.UUID
    hold_id: uuid.UUID
    provider: str
    # confirmed | pending | failed | refund_required
    status: str
    order_id: uuid.UUID | None
    failure_code: str | None


class StaffRefundOut(msgspec.Struct, frozen=True):
    order: OrderOut
    # False for an order paid at a till (cash or card terminal): hand the money back in person.
    refund_recorded: bool


class SaleOut(msgspec.Struct, frozen=True):
    event_id: uuid.UUID
    title: str
    previous: str
    status: str


def _hold_row(row: reads.HoldRow) -> HoldRowOut:
    return HoldRowOut(
        id=row.hold_id,
        event_id=row.event_id,
        event_title=row.event_title,
        owner_kind=row.owner_kind,
        owner=row.owner,
        state=row.state.value,
        quantity=row.quantity,
        total=Money(row.total_minor, row.currency),
        created_at=row.created_at,
        expires_at=row.expires_at,
        seconds_left=row.seconds_left,
        overdue=row.overdue,
    )


def _stuck(row: reads.StuckOrder) -> StuckOrderOut:
    return StuckOrderOut(
        hold_id=row.hold_id,
        payment_id=row.payment_id,
        event_id=row.event_id,
        event_title=row.event_title,
        buyer=row.buyer,
        hold_state=row.hold_state.value,
        amount=Money(row.amount_minor, row.currency),
        provider=row.provider,
        payment_state=row.payment_state,
        deadline=row.deadline,
        overdue=row.overdue,
        age_seconds=row.age_seconds,
    )


def _settlement(settled: Settlement) -> SettlementOut:
    return SettlementOut(
        payment_id=settled.payment_id,
        hold_id=settled.hold_id,
        provider=settled.provider.value,
        status=settled.result.value,
        order_id=settled.order_id,
        failure_code=settled.failure_code,
    )


def _sale(change: ops.SaleChange) -> SaleOut:
    return SaleOut(change.event_id, change.title, change.previous.value, change.status.value)


class OpsController(Controller):
    path = "/staff"
    tags = ["staff"]
    security = STAFF_SECURITY

    @get(
        "/dashboard",
        summary="Live numbers of every event on sale or paused",
        description=(
            "Per event: capacity, available, held and sold tickets; holds and orders in the last "
            "minute and per minute over five; revenue of active orders; holds within a minute of "
            "running out; payments stuck past their deadline. All read at one database instant (`at`). "
            "Then each waiting room: fans waiting and shopping, the admission rate measured over the "
            "last minute, and when the last fan waiting should be in."
        ),
        opt={"roles": WATCHERS},
    )
    async def dashboard(
        self,
        state: State,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
    ) -> DashboardOut:
        board = await ops.dashboard(db_session)
        refunds = await payments.unsettled_refund_counts(db_session)
        waiting = await rooms.rooms_status(db_session, state.redis, breaker=state.redis_breaker)
        return DashboardOut(
            at=board.at,
            events=[
                EventDashboardOut(
                    event_id=e.event_id,
                    title=e.title,
                    status=e.status.value,
                    starts_at=e.starts_at,
                    capacity=e.capacity,
                    available=e.available,
                    held=e.held,
                    sold=e.sold,
                    holds_last_minute=e.holds_last_minute,
                    holds_per_minute_5m=e.holds_per_minute_5m,
                    orders_last_minute=e.orders_last_minute,
                    orders_per_minute_5m=e.orders_per_minute_5m,
                    revenue=[Money(r.amount_minor, r.currency) for r in e.revenue],
                    expiring_soon=e.expiring_soon,
                    stuck_paying=e.stuck_paying,
                )
                for e in board.events
            ],
            expiring_soon=board.expiring_soon,
            stuck_paying=board.stuck_paying,
            refunds=RefundCountsOut(**refunds),
            waiting_rooms=[room_out(status) for status in waiting],
        )

    @get(
        "/holds",
        summary="Find holds, newest first",
        description="Anyone's holds. `expired=true` keeps those live but past their deadline.",
        # Fans' emails and other tills' sales: on-call work, not the box office's.
        opt={"roles": ON_CALL},
    )
    async def list_holds(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromQuery[uuid.UUID | None] = None,
        fan_email: Annotated[
            str | None, QueryParameter(max_length=320, pattern=STORABLE_TEXT, description="Any case")
        ] = None,
        hold_id: FromQuery[uuid.UUID | None] = None,
        expired: Annotated[
            bool, QueryParameter(description="Only holds live but past their deadline")
        ] = False,
        hold_state: Annotated[
            HoldState | None, QueryParameter(name="state", description="Only holds in this state")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="At most this many")] = 100,
    ) -> HoldList:
        rows = await reads.find_holds(
            db_session,
            event_id=event_id,
            fan_email=fan_email,
            hold_id=hold_id,
            expired_only=expired,
            state=hold_state,
            limit=limit,
        )
        return HoldList(items=[_hold_row(row) for row in rows])

    @post(
        "/holds/{hold_id:uuid}/release",
        status_code=200,
        summary="Release anyone's hold",
        description=(
            "Its tickets go back on sale at once. A hold being paid for is refused (settle its "
            "payment first); one already released or expired answers 409 `hold-already-ended`."
        ),
        # A till releases its own sales through /staff/sales; anyone's hold is on-call work.
        opt={"roles": ON_CALL, "audit": "hold.release", "audit_target": "hold"},
    )
    async def release(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        hold_id: FromPath[uuid.UUID],
    ) -> HoldOut:
        view = await ops.release_hold_by_staff(db_session, hold_id)
        audit_detail(request, event_id=str(view.event_id), quantity=view.quantity)
        return hold_out(view)

    @post(
        "/holds/release-expired",
        status_code=200,
        summary="Tidy every expired hold now",
        description="What the sweeper would do: of one event, or of all without `event_id`.",
        opt={"roles": ON_CALL, "audit": "hold.release_expired", "audit_target": "event"},
    )
    async def release_expired(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        data: JSONBody[ReleaseExpiredRequest | None] = None,
    ) -> ReleaseExpiredOut:
        event_id = data.event_id if data is not None else None
        released = await ops.release_expired(db_session, event_id)
        if event_id is not None:
            audit_detail(request, target_id=str(event_id))
        audit_detail(request, released=released)
        return ReleaseExpiredOut(event_id=event_id, released=released)

    @get(
        "/orders/stuck",
        summary="Payments that have not settled",
        description=(
            "Holds in `paying` past their payment deadline, and payments pending longer than "
            "`older_than` seconds, oldest first."
        ),
        opt={"roles": ON_CALL},
    )
    async def stuck_orders(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        older_than: Annotated[
            int, QueryParameter(ge=0, le=7 * 86400, description="Seconds a payment has been pending")
        ] = int(reads.STUCK_AFTER.total_seconds()),
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="At most this many")] = 100,
    ) -> StuckOrderList:
        rows = await reads.stuck_orders(db_session, older_than=dt.timedelta(seconds=older_than), limit=limit)
        return StuckOrderList(items=[_stuck(row) for row in rows])

    @post(
        "/orders/{hold_id:uuid}/reconcile",
        status_code=200,
        summary="Settle a stuck payment now",
        description=(
            "Asks the payment provider about the hold's pending payment and settles what it says, "
            "as the reconciliation job would. `status` may still be `pending`. Idempotent by the "
            "hold: no Idempotency-Key is needed, and one sent is not used."
        ),
        opt={
            "roles": ON_CALL,
            "audit": "order.reconcile",
            "audit_target": "hold",
            "idempotency_key": "natural",
        },
    )
    async def reconcile(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        hold_id: FromPath[uuid.UUID],
    ) -> SettlementOut:
        gateways: Gateways = request.app.state.gateways
        settled = await ops.reconcile_order(request.app.state.sessionmaker, gateways, hold_id)
        audit_detail(
            request,
            payment_id=str(settled.payment_id),
            result=settled.result.value,
            order_id=str(settled.order_id) if settled.order_id else None,
        )
        return _settlement(settled)

    @get(
        "/refunds",
        summary="Refunds not paid back yet",
        description=(
            "Newest first. By default every refund not paid back: `pending` (the refund job sends "
            "it within a minute), `submitted` (the provider accepted it and pays it out later) and "
            "`failed` (the provider refused it or kept erroring: see `last_error`, then retry)."
        ),
        opt={"roles": ON_CALL},
    )
    async def list_refunds(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        # ``state`` is Litestar's own keyword: the query parameter keeps the name under another.
        wanted: Annotated[
            list[RefundState] | None,
            QueryParameter(name="state", description="Only these states (repeatable)"),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="At most this many")] = 100,
    ) -> RefundList:
        states = set(wanted) if wanted else payments.UNSETTLED_REFUND_STATES
        rows = await payments.list_refunds(db_session, states=states, limit=limit)
        return RefundList(
            items=[
                RefundOut(
                    id=r.id, payment_id=r.payment_id, hold_id=r.hold_id, order_id=r.order_id,
                    provider=r.provider, amount=Money(r.amount_minor, r.currency), state=r.state,
                    reason=r.reason, attempts=r.attempts, last_error=r.last_error,
                    created_at=r.created_at, updated_at=r.updated_at,
                )
                for r in rows
            ]
        )  # fmt: skip

    @post(
        "/refunds/{refund_id:uuid}/retry",
        status_code=200,
        summary="Send a failed refund to the provider again",
        description=(
            "The refund is pending again and the refund job sends it within a minute, as a new "
            "request to the provider. Only failed refunds: another one answers 409 `refund-not-failed`."
        ),
        opt={"roles": ON_CALL, "audit": "refund.retry", "audit_target": "refund"},
    )
    async def retry_refund(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        refund_id: FromPath[uuid.UUID],
    ) -> RefundRetriedOut:
        if not await payments.retry_refund(db_session, refund_id):
            raise RefundNotFailed()
        return RefundRetriedOut(id=refund_id, state=RefundState.PENDING.value)

    @post(
        "/orders/{order_id:uuid}/refund",
        status_code=200,
        summary="Refund an order",
        description=(
            "Whenever staff decide (no cancellation cut-off): the seats go back on sale, the tickets "
            "are revoked and the payment is refunded. An order already refunded answers 409."
        ),
        opt={"roles": ON_CALL, "audit": "order.refund", "audit_target": "order"},
    )
    async def refund(
        self,
        request: Request[Any, Any, Any],
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        order_id: FromPath[uuid.UUID],
    ) -> StaffRefundOut:
        refunded = await ops.refund_order_by_staff(db_session, order_id)
        audit_detail(
            request,
            amount_minor=refunded.order.total_minor,
            currency=refunded.order.currency,
            refund_recorded=refunded.refund_recorded,
        )
        return StaffRefundOut(order=order_out(refunded.order), refund_recorded=refunded.refund_recorded)

    @post(
        "/events/{event_id:uuid}/pause",
        status_code=200,
        summary="Pause an event's sale",
        description="No new holds from now on; holds already made may still be paid. 409 unless on sale.",
        opt={"roles": ON_CALL, "audit": "sale.pause", "audit_target": "event"},
    )
    async def pause(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
    ) -> SaleOut:
        return _sale(await ops.pause_sale(db_session, event_id))

    @post(
        "/events/{event_id:uuid}/resume",
        status_code=200,
        summary="Resume a paused sale",
        description="Holds are granted again (within the on-sale window). 409 unless paused.",
        opt={"roles": ON_CALL, "audit": "sale.resume", "audit_target": "event"},
    )
    async def resume(
        self,
        staff: NamedDependency[StaffPrincipal],
        db_session: NamedDependency[AsyncSession],
        event_id: FromPath[uuid.UUID],
    ) -> SaleOut:
        return _sale(await ops.resume_sale(db_session, event_id))
