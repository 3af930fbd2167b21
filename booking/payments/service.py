"""Checkout, settlement, reconciliation and refunds: every payment ends confirmed or refunded.

Calls to the provider never happen inside one of our transactions: a slow provider must not
hold row locks or a connection. So checkout is three steps, each safe to repeat:

1. one transaction moves the hold to ``paying`` and records a ``pending`` payment;
2. the provider is asked to create the payment with an idempotency key made of the hold id
   and the payment id, so asking again (a retry, a crash, reconciliation) never charges twice;
3. one transaction settles what the provider answered: a success confirms the hold (or, when
   the seats went to someone else after the deadline, records a refund to make), a failure
   lets the fan try again, a pending answer waits for a webhook or reconciliation.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from booking import metrics
from booking.errors import (
    HoldExpired,
    HoldNotFound,
    HoldStateConflict,
    OrderNotFound,
    PaymentProviderPaused,
    RefundNotFound,
)
from booking.holds import service as holds
from booking.holds.models import LIVE_STATES, Hold, HoldState
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner
from booking.inventory.service import busy_is_retryable
from booking.inventory.transitions import Move, guard
from booking.orders.models import Order, OrderState
from booking.orders.service import OrderView, Outcome, cancel_order, confirm_hold, confirm_paid
from booking.outbox import Topic, emit
from booking.payments.breaker import Admission, ProviderBreaker, retry_after_seconds
from booking.payments.gateway import (
    Gateway,
    GatewayError,
    GatewayPayment,
    GatewayRefund,
    GatewayStatus,
    GatewayTimeout,
    ProviderPaused,
)
from booking.payments.models import (
    RECONCILE_AFTER,
    Payment,
    PaymentProvider,
    PaymentState,
    Refund,
    RefundState,
)
from booking.sqltext import HotStatement, param, sql

# A payment still waiting for its payer this long after its hold's grace ran out was
# abandoned (a closed tab): it is cancelled at the provider so it can never take money.
ABANDON_AFTER = dt.timedelta(minutes=30)
# Provider errors a refund may meet before it is failed for on-call to look at (the job
# runs every minute, so about this many minutes of errors).
MAX_REFUND_ATTEMPTS = 8
# A provider's search (how a payment whose create answer was lost is found) may lag behind
# its creates: Stripe's usually shows one within a minute. Not finding a payment proves it
# was never made only after this long. (Should it turn up later all the same, its webhook
# finds it by our id in its metadata, and the money still ends in an order or a refund.)
SEARCH_LAG = dt.timedelta(minutes=10)


class Result(enum.StrEnum):
    CONFIRMED = "confirmed"
    PENDING = "pending"
    FAILED = "failed"
    REFUND_REQUIRED = "refund_required"


@dataclass(frozen=True)
class Settlement:
    payment_id: uuid.UUID
    hold_id: uuid.UUID
    provider: PaymentProvider
    result: Result
    order_id: uuid.UUID | None = None
    failure_code: str | None = None
    client_secret: str | None = None


def payment_key(hold_id: uuid.UUID, payment_id: uuid.UUID) -> str:
    return f"boxoffice-hold-{hold_id}-payment-{payment_id}"


def refund_key(reason: str, subject: uuid.UUID) -> str:
    return f"boxoffice-refund-{reason}-{subject}"


@dataclass(frozen=True)
class OpenedPayment:
    """The hold's live payment as step 1 left it."""

    id: uuid.UUID
    hold_id: uuid.UUID
    provider: PaymentProvider
    state: PaymentState
    amount_minor: int
    currency: str
    order_id: uuid.UUID | None
    failure_code: str | None


def _open_payment_sql(owner_clause: str) -> str:
    """Step 1 in one statement: lock the hold (the caller's only), find its live payment, or
    move it to ``paying`` with its units kept for the payment grace and record a new one.

    The units are extended under the transition table's EXTEND guard, in id order; the hold
    and payment rows are written whenever the hold may be paid for, and the caller rolls back
    when fewer units were extended than the hold has (its deadline passed first).
    """
    extend = f"({sql(guard(Move.EXTEND, hold_id=param('hold_id')))})"
    paying_from = ", ".join(f"'{state.value}'" for state in sorted(holds.HOLD_MOVES["start_payment"][0]))
    return (
        "WITH h AS (SELECT id, state, quantity, total_minor, currency, expires_at,"  # noqa: S608
        "  least(now() + :grace, created_at + :max_lifetime + :grace) AS deadline, now() AS now"
        f"  FROM holds WHERE id = :hold_id{owner_clause} FOR UPDATE),"
        " live AS (SELECT p.id, p.provider, p.state, p.amount_minor, p.currency, p.order_id,"
        "  p.failure_code FROM payments p, h WHERE p.hold_id = h.id AND p.state IN ('pending', 'succeeded')"
        "  ORDER BY p.created_at DESC LIMIT 1),"
        " ok AS (SELECT h.id, h.deadline, h.total_minor, h.currency FROM h"
        f"  WHERE NOT EXISTS (SELECT 1 FROM live) AND h.state IN ({paying_from})"
        "  AND h.expires_at > h.now AND h.deadline > h.now),"
        " locked AS (SELECT inventory_units.id FROM inventory_units, ok"
        "  WHERE inventory_units.hold_id = ok.id ORDER BY inventory_units.id FOR UPDATE OF inventory_units),"
        " extended AS (UPDATE inventory_units SET held_until = ok.deadline, updated_at = now() FROM ok"
        f"  WHERE inventory_units.id IN (SELECT id FROM locked) AND {extend} RETURNING inventory_units.id),"
        " moved AS (UPDATE holds SET state = 'paying', expires_at = ok.deadline FROM ok"
        "  WHERE holds.id = ok.id RETURNING holds.id),"
        " created AS (INSERT INTO payments (hold_id, provider, amount_minor, currency)"
        "  SELECT ok.id, :provider, ok.total_minor, ok.currency FROM ok, moved"
        "  RETURNING id, provider, state, amount_minor, currency)"
        " SELECT h.state, h.quantity, h.expires_at > h.now AND h.deadline > h.now,"
        "  (SELECT count(*) FROM extended),"
        "  l.id, l.provider, l.state, l.amount_minor, l.currency, l.order_id, l.failure_code,"
        "  c.id, c.amount_minor, c.currency"
        " FROM h LEFT JOIN live l ON true LEFT JOIN created c ON true"
    )


_OPEN_PAYMENT = {
    "fan": HotStatement(_open_payment_sql(" AND fan_id = :owner_id")),
    "staff": HotStatement(_open_payment_sql(" AND staff_key_id = :owner_id")),
    "anyone": HotStatement(_open_payment_sql("")),
}


async def _open_payment(
    session: AsyncSession,
    *,
    owner: Owner | None,
    hold_id: uuid.UUID,
    provider: PaymentProvider,
    policy: HoldPolicy,
) -> tuple[OpenedPayment, bool]:
    """Step 1: the hold's live payment, or a new one with the hold moved to ``paying``.
    Returns the payment and whether this call created it. One round trip.

    Raises:
        HoldNotFound, HoldExpired, HoldStateConflict (confirmed or ended, or another
        provider's payment is in progress), InventoryBusy.
    """
    if owner is None:
        statement, owner_id = _OPEN_PAYMENT["anyone"], None
    elif owner.fan_id is not None:
        statement, owner_id = _OPEN_PAYMENT["fan"], owner.fan_id
    else:
        statement, owner_id = _OPEN_PAYMENT["staff"], owner.staff_key_id
    params = {
        "hold_id": hold_id,
        "owner_id": owner_id,
        "provider": provider.value,
        "grace": policy.payment_grace,
        "max_lifetime": policy.max_lifetime,
    }
    async with busy_is_retryable():
        found = await statement.rows(session, params)
    if not found:
        raise HoldNotFound()
    row = found[0]
    state, quantity, in_time, extended, live_id, *live, new_id, amount, currency = row
    if live_id is not None:
        live_provider, live_state, live_amount, live_currency, order_id, failure_code = live
        if live_provider != provider and live_state == PaymentState.PENDING:
            raise HoldStateConflict(state, f"pay with {provider.value} while a payment is in progress for")
        payment = OpenedPayment(
            live_id,
            hold_id,
            PaymentProvider(live_provider),
            PaymentState(live_state),
            live_amount,
            live_currency,
            order_id,
            failure_code,
        )
        return payment, False
    if state not in {s.value for s in holds.HOLD_MOVES["start_payment"][0]}:
        # The statement waited for the hold's lock and saw the hold as its holder left it,
        # but read payments as they were before the wait: a settlement that just confirmed
        # the hold is only visible to a new statement.
        settled = await session.scalar(
            select(Payment)
            .where(
                Payment.hold_id == hold_id, Payment.state.in_([PaymentState.PENDING, PaymentState.SUCCEEDED])
            )
            .execution_options(populate_existing=True)
        )
        if settled is not None:
            return OpenedPayment(
                settled.id,
                hold_id,
                settled.provider,
                settled.state,
                settled.amount_minor,
                settled.currency,
                settled.order_id,
                settled.failure_code,
            ), False
        if state == HoldState.EXPIRED:
            # Tidied by the sweeper already: the same answer as one past its deadline.
            raise HoldExpired()
        raise HoldStateConflict(state, "pay for")
    if not in_time or extended != quantity:
        raise HoldExpired()
    assert new_id is not None, "an open hold in time always gets its payment"
    return OpenedPayment(new_id, hold_id, provider, PaymentState.PENDING, amount, currency, None, None), True


def _keep_hold_sql(owner_clause: str) -> str:
    """While the provider is paused: in one statement, lock the hold (the caller's only) and,
    if it may be paid for and is in time, keep its units for the payment grace from now, as
    checkout's step 1 would have, under the same cap (``created_at + max_lifetime + grace``)
    and the transition table's EXTEND guard, without moving it to ``paying`` or touching its
    renewals. A deadline already past that point is left as it is: repeated refusals move it
    forward only up to the cap, never beyond, however long the outage.

    Returns the hold's state, quantity, whether it is in time, whether it was to be kept
    longer, how many units were, and its deadline afterwards. The caller rolls back when
    fewer units were kept than the hold has (one's deadline passed first).
    """
    extend = f"({sql(guard(Move.EXTEND, hold_id=param('hold_id')))})"
    keepable = ", ".join(f"'{state.value}'" for state in sorted(holds.HOLD_MOVES["start_payment"][0]))
    return (
        "WITH h AS (SELECT id, state, quantity, expires_at,"  # noqa: S608
        "  least(now() + :grace, created_at + :max_lifetime + :grace) AS deadline, now() AS now"
        f"  FROM holds WHERE id = :hold_id{owner_clause} FOR UPDATE),"
        " ok AS (SELECT h.id, h.deadline FROM h"
        f"  WHERE h.state IN ({keepable}) AND h.expires_at > h.now AND h.deadline > h.expires_at),"
        " locked AS (SELECT inventory_units.id FROM inventory_units, ok"
        "  WHERE inventory_units.hold_id = ok.id ORDER BY inventory_units.id FOR UPDATE OF inventory_units),"
        " extended AS (UPDATE inventory_units SET held_until = ok.deadline, updated_at = now() FROM ok"
        f"  WHERE inventory_units.id IN (SELECT id FROM locked) AND {extend} RETURNING inventory_units.id),"
        " moved AS (UPDATE holds SET expires_at = ok.deadline FROM ok"
        "  WHERE holds.id = ok.id RETURNING holds.expires_at)"
        " SELECT h.state, h.quantity, h.expires_at > h.now, EXISTS (SELECT 1 FROM ok),"
        "  (SELECT count(*) FROM extended), coalesce((SELECT expires_at FROM moved), h.expires_at)"
        " FROM h"
    )


_KEEPABLE = frozenset(state.value for state in holds.HOLD_MOVES["start_payment"][0])
_KEEP_HOLD = {
    "fan": HotStatement(_keep_hold_sql(" AND fan_id = :owner_id")),
    "staff": HotStatement(_keep_hold_sql(" AND staff_key_id = :owner_id")),
    "anyone": HotStatement(_keep_hold_sql("")),
}


async def _refuse_while_paused(
    sessions: async_sessionmaker[AsyncSession],
    *,
    owner: Owner | None,
    hold_id: uuid.UUID,
    policy: HoldPolicy,
    paused: ProviderPaused,
) -> Settlement:
    """Checkout while the provider is paused: nothing is sent to it. A hold that may be paid
    for keeps its seats (``_keep_hold_sql``) and stays as it was (``active``, or ``failed``
    after a decline); a hold already paid for answers with its settlement, as checkout does.

    Raises:
        PaymentProviderPaused (the hold kept, or a payment of it already in progress),
        HoldNotFound, HoldExpired, HoldStateConflict, InventoryBusy.
    """
    if owner is None:
        statement, owner_id = _KEEP_HOLD["anyone"], None
    elif owner.fan_id is not None:
        statement, owner_id = _KEEP_HOLD["fan"], owner.fan_id
    else:
        statement, owner_id = _KEEP_HOLD["staff"], owner.staff_key_id
    params = {
        "hold_id": hold_id,
        "owner_id": owner_id,
        "grace": policy.payment_grace,
        "max_lifetime": policy.max_lifetime,
    }
    retry_after = retry_after_seconds(paused)
    refused = metrics.PAYMENT_BREAKER_REFUSED.labels(paused.provider)
    async with sessions() as session:
        async with busy_is_retryable():
            found = await statement.rows(session, params)
        if not found:
            raise HoldNotFound()
        state, quantity, in_time, to_keep, kept, deadline = found[0]
        if state in _KEEPABLE:
            if not in_time or (to_keep and kept != quantity):
                await session.rollback()
                raise HoldExpired()
            await session.commit()
            refused.inc()
            raise PaymentProviderPaused(retry_after, deadline.isoformat())
        await session.rollback()
        if state == HoldState.PAYING:
            # A payment of it is in progress: its webhook or reconciliation settles it.
            refused.inc()
            raise PaymentProviderPaused(retry_after, deadline.isoformat(), in_progress=True)
        payment = await payment_of_hold(session, hold_id)
        if payment is not None and payment.state == PaymentState.SUCCEEDED:
            return _settlement_of(payment)
        if state == HoldState.EXPIRED:
            raise HoldExpired()
        raise HoldStateConflict(state, "pay for")


async def checkout(
    sessions: async_sessionmaker[AsyncSession],
    *,
    gateway: Gateway,
    owner: Owner | None,
    hold_id: uuid.UUID,
    method: dict[str, Any],
    policy: HoldPolicy,
    breaker: ProviderBreaker | None = None,
) -> Settlement:
    """Pay for a hold. Safe to repeat: a hold with a payment in progress continues that
    payment (the provider replays it), a paid hold answers with its order.

    With ``breaker``, the provider call is admitted by it, before anything changes: while the
    provider is paused nothing is sent to it, and the hold keeps its seats and its state
    (``_refuse_while_paused``). A checkout admitted before the breaker opened still makes
    its call; a timed-out one stays pending for reconciliation, as without a breaker.

    Raises:
        HoldNotFound, HoldExpired, HoldStateConflict, InventoryBusy, PaymentProviderPaused,
        and whatever the gateway raises for a malformed ``method`` (InvalidRequest) before
        anything changes.
    """
    if breaker is None:
        return await _checkout(sessions, gateway, None, owner, hold_id, method, policy)
    try:
        admission = breaker.admit()
    except ProviderPaused as paused:
        return await _refuse_while_paused(
            sessions, owner=owner, hold_id=hold_id, policy=policy, paused=paused
        )
    with admission:
        return await _checkout(sessions, gateway, admission, owner, hold_id, method, policy)


async def _checkout(
    sessions: async_sessionmaker[AsyncSession],
    gateway: Gateway,
    admission: Admission | None,
    owner: Owner | None,
    hold_id: uuid.UUID,
    method: dict[str, Any],
    policy: HoldPolicy,
) -> Settlement:
    async with sessions() as session:
        payment, created = await _open_payment(
            session, owner=owner, hold_id=hold_id, provider=gateway.provider, policy=policy
        )
        await session.commit()
        if payment.state != PaymentState.PENDING:
            return _settlement_of(payment)
        payment_id, amount, currency = payment.id, payment.amount_minor, payment.currency

    async def create() -> GatewayPayment:
        return await gateway.create(
            idempotency_key=payment_key(hold_id, payment_id),
            amount_minor=amount,
            currency=currency,
            method=method,
            metadata={"hold_id": str(hold_id), "payment_id": str(payment_id)},
        )

    try:
        # Judged by the breaker when there is one: a timeout or 5xx counts against the
        # provider, any answer (a decline included) for it.
        answer = await (create() if admission is None else admission.call(create))
    except GatewayTimeout:
        # Charged or not, nobody knows yet: the payment stays pending, the hold keeps its
        # seats for the grace period, and reconciliation asks the provider later.
        return Settlement(payment_id, hold_id, gateway.provider, Result.PENDING)
    except GatewayError:
        if not created:
            # Continuing a payment another request started (a second tab): its own call may
            # yet create it, so only reconciliation may decide; never fail it from here.
            return Settlement(payment_id, hold_id, gateway.provider, Result.PENDING)
        # The provider refused the request itself (not the card): nothing was charged, and
        # the fan may try again.
        async with sessions() as session:
            settled_now = await settle(
                session,
                payment_id,
                GatewayPayment("", GatewayStatus.FAILED, amount, currency, failure_code="gateway_error"),
            )
            await session.commit()
        return settled_now
    async with sessions() as session:
        order_id = None
        if answer.status == GatewayStatus.SUCCEEDED:
            order_id = await confirm_paid(
                session, payment_id=payment_id, hold_id=hold_id, ref=answer.ref or None
            )
        if order_id is not None:
            await session.commit()
            return Settlement(payment_id, hold_id, gateway.provider, Result.CONFIRMED, order_id=order_id)
        await session.rollback()
        outcome = await settle(session, payment_id, answer)
        await session.commit()
    return Settlement(
        outcome.payment_id,
        outcome.hold_id,
        outcome.provider,
        outcome.result,
        order_id=outcome.order_id,
        failure_code=outcome.failure_code,
        # Only a payment still waiting for the payer needs its secret in the browser.
        client_secret=answer.client_secret if outcome.result == Result.PENDING else None,
    )


# Failure codes that are ours, not the payer's: the provider refused the request itself, or
# never received it (every other code is a decline, by the card or the provider).
PROVIDER_FAILURES = frozenset({"gateway_error", "not_created"})

# What the refund record says, by the reason the confirmation gave.
REFUND_REASONS = {
    "seats_taken": "The seats were taken after the hold expired.",
    "ticket_cap": "The payment arrived after the hold expired, and the fan's tickets since reach the cap.",
}


async def settle(session: AsyncSession, payment_id: uuid.UUID, answer: GatewayPayment) -> Settlement:
    """Step 3: apply the provider's answer to a payment, in the caller's transaction. Safe to
    repeat and to call out of order: a payment that is already final does not change.

    Money that arrived always ends somewhere: a success confirms the hold, or, when its seats
    were taken after its deadline or its fan's cap has no room left for it, records a pending
    refund (made by the refund job).
    """
    payment = await session.scalar(
        select(Payment)
        .where(Payment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert payment is not None, "payments are never deleted"
    if payment.state == PaymentState.FAILED and answer.status == GatewayStatus.SUCCEEDED and answer.ref:
        # A provider may let the payer retry the same payment after a decline (Stripe keeps
        # the intent open) and succeed later: the money arrived, so it must end somewhere.
        return await _late_success_after_failure(session, payment, answer)
    if payment.state != PaymentState.PENDING:
        if answer.ref and payment.provider_ref is None:
            # Remember the provider's reference even now: a webhook or reconciliation about
            # it must find this payment.
            await session.execute(
                update(Payment)
                .where(Payment.id == payment_id)
                .values(provider_ref=answer.ref, updated_at=func.now())
            )
        return _settlement_of(payment)
    values: dict[str, Any] = {"updated_at": func.now()}
    if answer.ref and payment.provider_ref is None:
        values["provider_ref"] = answer.ref
    result = Result.PENDING
    order_id = None
    failure = None
    if answer.status == GatewayStatus.SUCCEEDED:
        confirmation = await confirm_hold(session, hold_id=payment.hold_id)
        values["state"] = PaymentState.SUCCEEDED
        if confirmation.outcome == Outcome.CONFIRMED:
            result, order_id = Result.CONFIRMED, confirmation.order_id
            values["order_id"] = order_id
        else:
            result = Result.REFUND_REQUIRED
            await _record_refund(
                session,
                payment,
                refund_key("hold", payment.hold_id),
                reason=REFUND_REASONS.get(confirmation.refund_reason or "", REFUND_REASONS["seats_taken"]),
            )
    elif answer.status == GatewayStatus.FAILED:
        failure = answer.failure_code or "failed"
        values.update(state=PaymentState.FAILED, failure_code=failure)
        result = Result.FAILED
        kind = "provider_error" if failure in PROVIDER_FAILURES else "declined"
        metrics.count_on_commit(session, metrics.PAYMENTS_FAILED.labels(kind))
        state = await session.scalar(select(Hold.state).where(Hold.id == payment.hold_id))
        if state == HoldState.PAYING:
            await holds.fail_payment(session, hold_id=payment.hold_id)
    await session.execute(update(Payment).where(Payment.id == payment_id).values(**values))
    return Settlement(
        payment.id, payment.hold_id, payment.provider, result, order_id=order_id, failure_code=failure
    )


async def _late_success_after_failure(
    session: AsyncSession, payment: Payment, answer: GatewayPayment
) -> Settlement:
    # The hold row first (after this payment's row, as everywhere in settle): a checkout
    # opening a new payment for the hold takes the same lock, so the two are serialised.
    await holds.lock_hold(session, payment.hold_id, None)
    if await session.scalar(select(Refund.id).where(Refund.payment_id == payment.id)) is not None:
        return Settlement(payment.id, payment.hold_id, payment.provider, Result.REFUND_REQUIRED)
    newer = await session.scalar(
        select(Payment.id).where(
            Payment.hold_id == payment.hold_id,
            Payment.id != payment.id,
            Payment.state.in_([PaymentState.PENDING, PaymentState.SUCCEEDED]),
        )
    )
    if newer is None:
        await session.execute(
            update(Payment)
            .where(Payment.id == payment.id)
            .values(state=PaymentState.SUCCEEDED, provider_ref=answer.ref, updated_at=func.now())
        )
        confirmation = await confirm_hold(session, hold_id=payment.hold_id)
        if confirmation.outcome == Outcome.CONFIRMED:
            await session.execute(
                update(Payment).where(Payment.id == payment.id).values(order_id=confirmation.order_id)
            )
            return Settlement(
                payment.id, payment.hold_id, payment.provider, Result.CONFIRMED, confirmation.order_id
            )
    else:
        # Another payment of this hold is the one in charge (only one may be live): this one
        # stays failed for the booking, and its money goes back.
        await session.execute(
            update(Payment)
            .where(Payment.id == payment.id)
            .values(provider_ref=answer.ref, failure_code="superseded", updated_at=func.now())
        )
        await emit(
            session,
            Topic.HOLD_REFUND_REQUIRED,
            {
                "hold_id": str(payment.hold_id),
                "reason": "duplicate_payment",
                "amount_minor": payment.amount_minor,
                "currency": payment.currency,
            },
        )
    await _record_refund(
        session,
        payment,
        refund_key("payment", payment.id),
        reason="The payment arrived after it was given up.",
    )
    return Settlement(payment.id, payment.hold_id, payment.provider, Result.REFUND_REQUIRED)


def _settlement_of(payment: Payment | OpenedPayment) -> Settlement:
    if payment.state == PaymentState.SUCCEEDED:
        result = Result.CONFIRMED if payment.order_id is not None else Result.REFUND_REQUIRED
    elif payment.state == PaymentState.PENDING:
        result = Result.PENDING
    else:
        result = Result.FAILED
    return Settlement(
        payment.id,
        payment.hold_id,
        payment.provider,
        result,
        order_id=payment.order_id,
        failure_code=payment.failure_code,
    )


# Taken at a till: the money goes back in person (cash from the drawer, or a reversal on the
# card terminal), not through a provider. Its refund is recorded as paid back there and then,
# so the books show it, and no job tries to send it to a provider that never had it.
_REFUNDED_IN_PERSON = frozenset({PaymentProvider.CASH, PaymentProvider.CARD_PRESENT})
IN_PERSON = "Handed back in person at the till."


async def _record_refund(
    session: AsyncSession,
    payment: Payment,
    key: str,
    *,
    reason: str,
    state: RefundState = RefundState.PENDING,
) -> None:
    result = await session.execute(
        pg_insert(Refund)
        .values(
            payment_id=payment.id,
            idempotency_key=key,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            reason=reason,
            state=state,
        )
        .on_conflict_do_nothing(index_elements=["payment_id", "idempotency_key"])
        .returning(Refund.id)
    )
    if state == RefundState.SUCCEEDED and result.first() is not None:
        metrics.count_on_commit(session, metrics.REFUNDS_ISSUED)


async def request_order_refund(session: AsyncSession, order_id: uuid.UUID) -> bool:
    """Record the refund of an order's payment (after ``refund_order`` returned its seats).
    The refund job makes it with the provider. Returns False when there is nothing for it to
    do: no succeeded payment, or one taken at a till, whose money is handed back in person
    (recorded as paid back, ``IN_PERSON``).

    Raises:
        OrderNotFound.
    """
    if await session.scalar(select(Order.id).where(Order.id == order_id)) is None:
        raise OrderNotFound()
    payment = await session.scalar(
        select(Payment).where(Payment.order_id == order_id, Payment.state == PaymentState.SUCCEEDED)
    )
    if payment is None:
        return False
    if payment.provider in _REFUNDED_IN_PERSON:
        await _record_refund(
            session, payment, refund_key("order", order_id), reason=IN_PERSON, state=RefundState.SUCCEEDED
        )
        return False
    await _record_refund(session, payment, refund_key("order", order_id), reason="The order was cancelled.")
    return True


async def cancel_and_refund(
    session: AsyncSession, *, order_id: uuid.UUID, fan_id: uuid.UUID | None, cutoff: dt.timedelta
) -> OrderView:
    """Cancel an order (seats back on sale, tickets revoked) and record the refund of its
    payment, in the caller's transaction: one is never done without the other.

    Raises:
        OrderNotFound, CancellationClosed, InventoryBusy.
    """
    view = await cancel_order(session, order_id=order_id, fan_id=fan_id, cutoff=cutoff)
    if view.state == OrderState.REFUNDED:
        await request_order_refund(session, order_id)
    return view


async def payment_of_hold(session: AsyncSession, hold_id: uuid.UUID) -> Payment | None:
    """The hold's most recent payment."""
    return await session.scalar(
        select(Payment)
        .where(Payment.hold_id == hold_id)
        .order_by(Payment.created_at.desc(), Payment.id)
        .limit(1)
    )


@dataclass(frozen=True)
class Due:
    payment_id: uuid.UUID
    hold_id: uuid.UUID
    provider: PaymentProvider
    ref: str | None
    hold_overdue: bool
    abandoned: bool = False
    # Old enough that a provider's search would show a payment it made (see SEARCH_LAG).
    searchable: bool = True


async def due_for_reconciliation(session: AsyncSession, *, limit: int = 100) -> list[Due]:
    """Pending payments to ask the provider about: their hold's payment grace has run out,
    or they have waited longer than ``RECONCILE_AFTER``."""
    overdue = Hold.expires_at <= func.now()
    abandoned = Hold.expires_at <= func.now() - ABANDON_AFTER
    rows = (
        await session.execute(
            select(
                Payment.id,
                Payment.hold_id,
                Payment.provider,
                Payment.provider_ref,
                overdue,
                abandoned,
                Payment.created_at <= func.now() - SEARCH_LAG,
            )
            .join(Hold, Hold.id == Payment.hold_id)
            .where(
                Payment.state == PaymentState.PENDING,
                or_(overdue, Payment.updated_at <= func.now() - RECONCILE_AFTER),
            )
            .order_by(Payment.updated_at)
            .limit(limit)
        )
    ).all()
    return [
        Due(pid, hid, provider, ref, bool(late), bool(gone), bool(searchable))
        for pid, hid, provider, ref, late, gone, searchable in rows
    ]


async def reconcile(sessions: async_sessionmaker[AsyncSession], gateway: Gateway, due: Due) -> Settlement:
    """Ask the provider about one pending payment and settle what it says. A payment the
    provider never created (its create was lost before reaching it) is failed once its hold
    is overdue and the provider's search has had time to show it (``SEARCH_LAG``), which
    lets the hold lapse.

    Raises:
        GatewayTimeout, GatewayError (the payment stays pending for the next round).
    """
    if due.ref is not None:
        answer: GatewayPayment | None = await gateway.retrieve(due.ref, hold_overdue=due.hold_overdue)
    else:
        answer = await gateway.find(payment_key(due.hold_id, due.payment_id))
        if answer is not None and answer.status == GatewayStatus.PENDING and due.hold_overdue:
            answer = await gateway.retrieve(answer.ref, hold_overdue=True)
    closed = False
    if answer is not None and answer.status == GatewayStatus.PENDING and due.abandoned:
        answer = await gateway.cancel(answer.ref)
        closed = answer.status != GatewayStatus.PENDING
    async with sessions() as session:
        if answer is None:
            if not due.hold_overdue or not due.searchable:
                payment = await session.get_one(Payment, due.payment_id)
                return _settlement_of(payment)
            answer = GatewayPayment("", GatewayStatus.FAILED, 0, "XXX", failure_code="not_created")
        outcome = await settle(session, due.payment_id, answer)
        await session.execute(
            update(Payment)
            .where(Payment.id == due.payment_id)
            .values(updated_at=func.now(), **({"provider_closed_at": func.now()} if closed else {}))
        )
        await session.commit()
    return outcome


@dataclass(frozen=True)
class OpenFailure:
    payment_id: uuid.UUID
    provider: PaymentProvider
    ref: str


async def failed_to_close(session: AsyncSession, *, limit: int = 100) -> list[OpenFailure]:
    """Failed payments the provider may still let take money, whose hold no longer waits
    for them: the hold ended or passed its deadline, or a newer payment was opened for it.

    One that failed on a hold still live is left open: with Stripe the payer may try another
    card on the same intent, and its success confirms the hold (``settle``)."""
    newer = aliased(Payment)
    given_up = or_(
        Hold.state.not_in(sorted(LIVE_STATES)),
        Hold.expires_at <= func.now(),
        exists().where(newer.hold_id == Payment.hold_id, newer.created_at > Payment.created_at),
    )
    rows = (
        await session.execute(
            select(Payment.id, Payment.provider, Payment.provider_ref)
            .join(Hold, Hold.id == Payment.hold_id)
            .where(
                Payment.state == PaymentState.FAILED,
                Payment.provider_ref.is_not(None),
                Payment.provider_closed_at.is_(None),
                given_up,
            )
            .order_by(Payment.updated_at)
            .limit(limit)
        )
    ).all()
    return [OpenFailure(pid, provider, str(ref)) for pid, provider, ref in rows]


async def close_failed(
    sessions: async_sessionmaker[AsyncSession], gateway: Gateway, item: OpenFailure
) -> Settlement | None:
    """Tell the provider to cancel one given-up failed payment, and record that it did. If
    the payer completed it a moment ago the provider says so instead, and the success is
    settled like any late one (an order if the seats and the cap allow, else a refund).
    Returns that settlement, or None.

    Raises:
        GatewayTimeout, GatewayError (it stays open and is tried again next round).
    """
    answer = await gateway.cancel(item.ref)
    if answer.status == GatewayStatus.PENDING:
        return None  # being processed: the next round sees how it ended
    async with sessions() as session:
        outcome = None
        if answer.status == GatewayStatus.SUCCEEDED:
            outcome = await settle(session, item.payment_id, answer)
        await session.execute(
            update(Payment).where(Payment.id == item.payment_id).values(provider_closed_at=func.now())
        )
        await session.commit()
    return outcome


@dataclass(frozen=True)
class RefundDue:
    refund_id: uuid.UUID
    payment_ref: str
    provider: PaymentProvider
    amount_minor: int
    currency: str
    idempotency_key: str


async def pending_refunds(session: AsyncSession, *, limit: int = 100) -> list[RefundDue]:
    rows = (
        await session.execute(
            select(Refund, Payment.provider, Payment.provider_ref)
            .join(Payment, Payment.id == Refund.payment_id)
            .where(Refund.state == RefundState.PENDING, Payment.provider_ref.is_not(None))
            .order_by(Refund.updated_at)
            .limit(limit)
        )
    ).all()
    return [
        RefundDue(
            r.id,
            str(ref),
            provider,
            r.amount_minor,
            r.currency,
            # A retry after a failure is a new request: the first key would replay the failure.
            r.idempotency_key if r.retries == 0 else f"{r.idempotency_key}/retry-{r.retries}",
        )
        for r, provider, ref in rows
    ]


async def postpone(
    sessions: async_sessionmaker[AsyncSession],
    *,
    payment_id: uuid.UUID | None = None,
    refund_id: uuid.UUID | None = None,
) -> None:
    """Send a payment or refund that could not be handled this round to the back of its
    queue, so one that keeps failing never starves the others."""
    async with sessions() as session:
        if payment_id is not None:
            await session.execute(
                update(Payment).where(Payment.id == payment_id).values(updated_at=func.now())
            )
        if refund_id is not None:
            await session.execute(update(Refund).where(Refund.id == refund_id).values(updated_at=func.now()))
        await session.commit()


async def make_refund(sessions: async_sessionmaker[AsyncSession], gateway: Gateway, due: RefundDue) -> bool:
    """Pay one recorded refund back through the provider. The key makes a repeat (a retried
    job, two workers) replay instead of paying twice. Returns whether the money is back:
    a refund the provider accepted but has not paid out yet is ``submitted`` (checked again
    by ``check_refund`` and by the provider's webhooks), one it refused is ``failed``.

    A provider error counts as an attempt: after ``MAX_REFUND_ATTEMPTS`` the refund is
    ``failed`` with the error, for on-call (``boxoffice refunds list``), instead of being
    retried for ever unseen.

    Raises:
        GatewayTimeout (the refund stays pending, not counted: the provider may not have
        seen it), ProviderPaused (not counted: nothing was sent), GatewayError (counted,
        then re-raised).
    """
    try:
        answer = await gateway.refund(
            ref=due.payment_ref,
            amount_minor=due.amount_minor,
            currency=due.currency,
            idempotency_key=due.idempotency_key,
        )
    except (GatewayTimeout, ProviderPaused):
        raise
    except GatewayError as error:
        async with sessions() as session:
            await session.execute(
                update(Refund)
                .where(Refund.id == due.refund_id, Refund.state == RefundState.PENDING)
                .values(
                    attempts=Refund.attempts + 1,
                    last_error=str(error)[:2000],
                    state=case(
                        (Refund.attempts + 1 >= MAX_REFUND_ATTEMPTS, RefundState.FAILED.value),
                        else_=RefundState.PENDING.value,
                    ),
                    updated_at=func.now(),
                )
            )
            await session.commit()
        raise
    async with sessions() as session:
        await apply_refund_answer(session, due.refund_id, answer, from_states=(RefundState.PENDING,))
        await session.commit()
    return answer.status == GatewayStatus.SUCCEEDED


async def apply_refund_answer(
    session: AsyncSession,
    refund_id: uuid.UUID,
    answer: GatewayRefund,
    *,
    from_states: tuple[RefundState, ...] = (RefundState.PENDING, RefundState.SUBMITTED),
) -> RefundState | None:
    """Record what the provider says of a refund, if the refund is in one of ``from_states``
    (a refund only moves forward: a stale answer cannot undo a paid-back one). Returns the
    state written, or None. The caller commits."""
    state = {
        GatewayStatus.SUCCEEDED: RefundState.SUCCEEDED,
        GatewayStatus.PENDING: RefundState.SUBMITTED,
        GatewayStatus.FAILED: RefundState.FAILED,
    }[answer.status]
    values: dict[str, Any] = {"state": state, "updated_at": func.now()}
    if answer.ref:
        values["provider_ref"] = answer.ref
    if answer.failure_code:
        values["last_error"] = f"the provider answered {answer.failure_code}"
    result = await session.execute(
        update(Refund)
        .where(Refund.id == refund_id, Refund.state.in_(from_states))
        .values(**values)
        .returning(Refund.id)
    )
    if result.first() is None:
        return None
    # Succeeded is final and never a source state here: each refund is counted once.
    if state == RefundState.SUCCEEDED:
        metrics.count_on_commit(session, metrics.REFUNDS_ISSUED)
    return state


@dataclass(frozen=True)
class SubmittedRefund:
    refund_id: uuid.UUID
    provider: PaymentProvider
    ref: str


async def submitted_refunds(session: AsyncSession, *, limit: int = 100) -> list[SubmittedRefund]:
    """Refunds the provider accepted and has not paid out yet, oldest news first."""
    rows = (
        await session.execute(
            select(Refund.id, Payment.provider, Refund.provider_ref)
            .join(Payment, Payment.id == Refund.payment_id)
            .where(Refund.state == RefundState.SUBMITTED, Refund.provider_ref.is_not(None))
            .order_by(Refund.updated_at)
            .limit(limit)
        )
    ).all()
    return [SubmittedRefund(rid, provider, str(ref)) for rid, provider, ref in rows]


async def check_refund(
    sessions: async_sessionmaker[AsyncSession], gateway: Gateway, item: SubmittedRefund
) -> RefundState:
    """Ask the provider how a submitted refund stands and record it. A refund only ever
    moves forward: a stale answer cannot take a paid-back refund back to submitted.

    Raises:
        GatewayTimeout, GatewayError (it stays submitted for the next round).
    """
    answer = await gateway.retrieve_refund(item.ref)
    async with sessions() as session:
        await apply_refund_answer(session, item.refund_id, answer, from_states=(RefundState.SUBMITTED,))
        state = await session.scalar(select(Refund.state).where(Refund.id == item.refund_id))
        await session.commit()
    assert state is not None, "refunds are never deleted"
    return state


async def refund_by_provider_ref(
    session: AsyncSession, provider: PaymentProvider, ref: str
) -> SubmittedRefund | None:
    """Our refund the provider calls ``ref`` (what a refund webhook names), if any."""
    row = (
        await session.execute(
            select(Refund.id)
            .join(Payment, Payment.id == Refund.payment_id)
            .where(Payment.provider == provider, Refund.provider_ref == ref)
        )
    ).first()
    return SubmittedRefund(row[0], provider, ref) if row else None


@dataclass(frozen=True)
class RefundView:
    id: uuid.UUID
    payment_id: uuid.UUID
    hold_id: uuid.UUID
    order_id: uuid.UUID | None
    provider: str
    amount_minor: int
    currency: str
    state: str
    reason: str
    attempts: int
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


# Every refund whose money is not back yet: what on-call lists and the dashboard counts.
UNSETTLED_REFUND_STATES = frozenset(RefundState) - {RefundState.SUCCEEDED}


async def list_refunds(
    session: AsyncSession, *, states: Collection[RefundState] = UNSETTLED_REFUND_STATES, limit: int = 100
) -> list[RefundView]:
    """Refunds in ``states`` (by default those not paid back yet), newest first (``failed``
    is what needs on-call)."""
    query = (
        select(Refund, Payment.hold_id, Payment.order_id, Payment.provider)
        .join(Payment, Payment.id == Refund.payment_id)
        .order_by(Refund.created_at.desc(), Refund.id)
        .limit(limit)
    )
    rows = (await session.execute(query.where(Refund.state.in_(sorted(states))))).all()
    return [
        RefundView(
            r.id, r.payment_id, hold_id, order_id, provider.value, r.amount_minor, r.currency, r.state.value,
            r.reason, r.attempts, r.last_error, r.created_at, r.updated_at,
        )
        for r, hold_id, order_id, provider in rows
    ]  # fmt: skip


async def unsettled_refund_counts(session: AsyncSession) -> dict[str, int]:
    """How many refunds are not paid back yet, by state (pending, submitted, failed)."""
    rows = (
        await session.execute(
            select(Refund.state, func.count())
            .where(Refund.state.in_(sorted(UNSETTLED_REFUND_STATES)))
            .group_by(Refund.state)
        )
    ).all()
    counts = {state.value: 0 for state in sorted(UNSETTLED_REFUND_STATES)}
    counts.update({state.value: int(n) for state, n in rows})
    return counts


async def retry_refund(session: AsyncSession, refund_id: uuid.UUID) -> bool:
    """Put a failed refund back to be paid (by the next refund job run), its attempts reset.
    Returns False when it is not failed (nothing changes). The caller commits.

    Raises:
        RefundNotFound.
    """
    state = await session.scalar(select(Refund.state).where(Refund.id == refund_id).with_for_update())
    if state is None:
        raise RefundNotFound()
    if state != RefundState.FAILED:
        return False
    await session.execute(
        update(Refund)
        .where(Refund.id == refund_id)
        .values(state=RefundState.PENDING, attempts=0, retries=Refund.retries + 1, updated_at=func.now())
    )
    return True
