"""Refunds end to end with the Stripe fake: unsettled until Stripe has paid them back, told
by webhook or found by polling, failures shown and retried, provider errors counted."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.db import make_sessionmaker
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.payments import service as payments
from booking.payments.gateway import GatewayError
from booking.payments.models import RefundState
from booking.payments.stripe_gateway import StripeGateway
from booking.settings import Settings
from tests.factories import SmallEvent, make_event, make_fan
from tests.fakes.stripe import CARD_SUCCESS, FakeStripe
from tests.live_api import stripe_api_client

POLICY = HoldPolicy()


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=4, ga_capacity=2)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def stripe(fake: FakeStripe) -> StripeGateway:
    return StripeGateway(fake.api_key, http_client=fake.http_client)


async def _refund_due(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    stripe: StripeGateway,
    fake: FakeStripe,
    event: SmallEvent,
) -> payments.RefundDue:
    """A paid order, then cancelled by the fan: one refund recorded, not yet paid back."""
    owner = Owner(fan_id=await make_fan(session))
    view = await holds.create_hold(
        session,
        owner=owner,
        event_id=event.event_id,
        selection=SeatSelection((event.seat_ids[0],)),
        policy=POLICY,
    )
    await session.commit()
    started = await payments.checkout(
        sessions, gateway=stripe, owner=owner, hold_id=view.id, method={}, policy=POLICY
    )
    ref = str(
        await session.scalar(
            text("SELECT provider_ref FROM payments WHERE id = :p"), {"p": started.payment_id}
        )
    )
    fake.confirm(ref, card=CARD_SUCCESS)
    async with sessions() as s:
        paid = await payments.settle(s, started.payment_id, await stripe.retrieve(ref, hold_overdue=False))
        await s.commit()
    assert paid.order_id is not None
    async with sessions() as s:
        await payments.cancel_and_refund(
            s, order_id=paid.order_id, fan_id=owner.fan_id, cutoff=dt.timedelta(0)
        )
        await s.commit()
    fake.take_webhooks()
    (due,) = await payments.pending_refunds(session)
    return due


async def _state(session: AsyncSession) -> tuple[str, int, str | None]:
    await session.rollback()
    row = (await session.execute(text("SELECT state, attempts, last_error FROM refunds"))).one()
    return row[0], row[1], row[2]


async def test_a_refund_stripe_accepts_is_submitted_until_its_webhook_says_paid(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    stripe: StripeGateway,
    fake: FakeStripe,
    event: SmallEvent,
    settings: Settings,
) -> None:
    due = await _refund_due(session, sessions, stripe, fake, event)
    fake.refund_status = "pending"
    assert await payments.make_refund(sessions, stripe, due) is False
    assert (await _state(session))[0] == "submitted"
    assert await payments.unsettled_refund_counts(session) == {"pending": 0, "submitted": 1, "failed": 0}
    (refund_id,) = fake.refunds
    fake.settle_refund(refund_id, status="succeeded")
    (hook,) = fake.take_webhooks()
    async with stripe_api_client(settings, fake) as api:
        answer = await api.post("/webhooks/stripe", content=hook.payload, headers=hook.headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "refund succeeded"
    assert (await _state(session))[0] == "succeeded"
    # A stale "pending" answer afterwards cannot take it back.
    assert await payments.submitted_refunds(session) == []


async def test_a_refund_stripe_fails_later_is_found_by_polling_shown_and_retried_afresh(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    stripe: StripeGateway,
    fake: FakeStripe,
    event: SmallEvent,
) -> None:
    due = await _refund_due(session, sessions, stripe, fake, event)
    fake.refund_status = "pending"
    await payments.make_refund(sessions, stripe, due)
    (first_id,) = fake.refunds
    fake.settle_refund(first_id, status="failed", failure_reason="expired_or_canceled_card")
    fake.take_webhooks()  # lost: the poll finds it
    (waiting,) = await payments.submitted_refunds(session)
    assert await payments.check_refund(sessions, stripe, waiting) == RefundState.FAILED
    state, _, error = await _state(session)
    assert state == "failed"
    assert error is not None
    assert "expired_or_canceled_card" in error
    (shown,) = await payments.list_refunds(session, states={RefundState.FAILED})
    assert shown.order_id is not None
    assert await payments.retry_refund(session, shown.id)
    await session.commit()
    assert not await payments.retry_refund(session, shown.id)  # pending again: nothing to retry
    await session.rollback()
    fake.refund_status = "succeeded"
    (again,) = await payments.pending_refunds(session)
    assert again.idempotency_key != due.idempotency_key  # a new request, not a replay of the failure
    assert await payments.make_refund(sessions, stripe, again) is True
    assert (await _state(session))[0] == "succeeded"
    assert len(fake.refunds) == 2


async def test_provider_errors_are_counted_and_fail_the_refund_for_on_call(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    stripe: StripeGateway,
    fake: FakeStripe,
    event: SmallEvent,
) -> None:
    due = await _refund_due(session, sessions, stripe, fake, event)
    for attempt in range(1, payments.MAX_REFUND_ATTEMPTS + 1):
        fake.fail_next(3)  # the first try and both SDK retries
        with pytest.raises(GatewayError):
            await payments.make_refund(sessions, stripe, due)
        state, attempts, error = await _state(session)
        assert attempts == attempt
        assert error is not None
        assert state == ("failed" if attempt == payments.MAX_REFUND_ATTEMPTS else "pending")
    assert await payments.pending_refunds(session) == []


async def test_a_payment_already_refunded_at_stripe_counts_as_paid_back(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    stripe: StripeGateway,
    fake: FakeStripe,
    event: SmallEvent,
) -> None:
    due = await _refund_due(session, sessions, stripe, fake, event)
    # Someone refunded it in Stripe's dashboard first, with a request of their own.
    await stripe.refund(
        ref=due.payment_ref, amount_minor=due.amount_minor, currency="EUR", idempotency_key=str(uuid.uuid4())
    )
    assert await payments.make_refund(sessions, stripe, due) is True
    state, _, error = await _state(session)
    assert state == "succeeded"
    assert error is not None
    assert "already_refunded" in error
