"""Checkout through the offline provider, each test card, reconciliation and refunds."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from booking.db import make_sessionmaker
from booking.errors import HoldExpired
from booking.holds import service as holds
from booking.holds.policy import HoldPolicy
from booking.holds.service import Owner, SeatSelection
from booking.payments import offline
from booking.payments import service as payments
from booking.payments.gateway import GatewayError, GatewayPayment, GatewayStatus
from booking.payments.models import PaymentProvider
from booking.payments.offline import OfflineGateway
from booking.payments.service import Result
from booking.payments.stripe_gateway import StripeGateway
from tests.factories import SmallEvent, advance_clock, make_event, make_fan, pay_with_card
from tests.fakes.stripe import CARD_DECLINED, CARD_SUCCESS, FakeStripe, FakeStripeError

POLICY = HoldPolicy()


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=2)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
def gateway(sessions: async_sessionmaker[AsyncSession]) -> OfflineGateway:
    return OfflineGateway(sessions)


async def _hold(session: AsyncSession, event: SmallEvent, seats: list[int]) -> tuple[Owner, uuid.UUID]:
    owner = Owner(fan_id=await make_fan(session))
    view = await holds.create_hold(
        session, owner=owner, event_id=event.event_id, selection=SeatSelection(tuple(seats)), policy=POLICY
    )
    await session.commit()
    return owner, view.id


async def _scalar(session: AsyncSession, sql: str, **params: object) -> object:
    return await session.scalar(text(sql), params)


async def test_a_good_card_confirms_and_a_repeat_changes_nothing(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:2])
    first = await pay_with_card(sessions, gateway, owner, hold_id, offline.SUCCESS)
    assert first.result == Result.CONFIRMED
    assert first.order_id is not None
    again = await pay_with_card(sessions, gateway, owner, hold_id, offline.SUCCESS)
    assert again.order_id == first.order_id
    assert await _scalar(session, "SELECT count(*) FROM payments") == 1
    assert await _scalar(session, "SELECT count(*) FROM offline_gateway_payments") == 1
    assert await _scalar(session, "SELECT count(*) FROM tickets") == 2


@pytest.mark.parametrize(
    ("card", "code"),
    [(offline.DECLINED, "card_declined"), (offline.INSUFFICIENT_FUNDS, "insufficient_funds")],
)
async def test_a_declined_card_keeps_the_hold_for_another_try(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
    card: str,
    code: str,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:1])
    declined = await pay_with_card(sessions, gateway, owner, hold_id, card)
    assert declined.result == Result.FAILED
    assert declined.failure_code == code
    assert (await holds.get_hold(session, hold_id)).state == "failed"
    retried = await pay_with_card(sessions, gateway, owner, hold_id, offline.SUCCESS)
    assert retried.result == Result.CONFIRMED
    states = (await session.scalars(text("SELECT state FROM payments ORDER BY created_at"))).all()
    assert states == ["failed", "succeeded"]


async def test_a_gateway_timeout_is_settled_by_reconciliation_without_charging_twice(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:1])
    timed_out = await pay_with_card(sessions, gateway, owner, hold_id, offline.TIMEOUT)
    assert timed_out.result == Result.PENDING
    assert await payments.due_for_reconciliation(session) == []  # not yet due
    await session.execute(text("UPDATE payments SET updated_at = now() - interval '3 minutes'"))
    await session.commit()
    due = await payments.due_for_reconciliation(session)
    assert [d.payment_id for d in due] == [timed_out.payment_id]
    settled = await payments.reconcile(sessions, gateway, due[0])
    assert settled.result == Result.CONFIRMED
    # The fan pressing "pay" again meanwhile would have continued the same payment.
    again = await pay_with_card(sessions, gateway, owner, hold_id, offline.TIMEOUT)
    assert again.order_id == settled.order_id
    assert await _scalar(session, "SELECT count(*) FROM offline_gateway_payments") == 1


async def test_a_late_success_keeps_the_seats_when_they_are_still_free(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:1])
    assert (
        await pay_with_card(sessions, gateway, owner, hold_id, offline.LATE_SUCCESS)
    ).result == Result.PENDING
    await advance_clock(session, POLICY.payment_grace.total_seconds() + 1)
    (due,) = await payments.due_for_reconciliation(session)
    assert due.hold_overdue
    assert (await payments.reconcile(sessions, gateway, due)).result == Result.CONFIRMED


async def test_a_late_success_whose_seats_were_taken_is_refunded_once(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:2])
    await pay_with_card(sessions, gateway, owner, hold_id, offline.LATE_SUCCESS)
    await advance_clock(session, POLICY.payment_grace.total_seconds() + 1)
    await _hold(session, event, event.seat_ids[1:2])  # a rival takes one of the seats
    (due,) = await payments.due_for_reconciliation(session)
    settled = await payments.reconcile(sessions, gateway, due)
    assert settled.result == Result.REFUND_REQUIRED
    assert (await payments.reconcile(sessions, gateway, due)).result == Result.REFUND_REQUIRED
    (refund,) = await payments.pending_refunds(session)
    assert await payments.make_refund(sessions, gateway, refund)
    assert await payments.make_refund(sessions, gateway, refund)  # a repeated job replays
    assert await _scalar(session, "SELECT count(*) FROM refunds WHERE state = 'succeeded'") == 1
    assert await _scalar(session, "SELECT count(*) FROM inventory_units WHERE state = 'sold'") == 0
    assert await payments.pending_refunds(session) == []


async def test_a_late_success_past_the_fans_cap_is_refunded_not_confirmed(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
) -> None:
    """A hold stops counting toward its fan's cap at its deadline, so the fan may buy other
    tickets while its payment is still out; if that payment succeeds after all, the fan
    would pass the cap. It is refunded instead, and says why."""
    policy = HoldPolicy(tickets_per_fan=2)
    owner = Owner(fan_id=await make_fan(session))

    async def hold(seats: list[int]) -> uuid.UUID:
        view = await holds.create_hold(
            session,
            owner=owner,
            event_id=event.event_id,
            selection=SeatSelection(tuple(seats)),
            policy=policy,
        )
        await session.commit()
        return view.id

    slow = await hold(event.seat_ids[:2])
    assert (
        await pay_with_card(sessions, gateway, owner, slow, offline.LATE_SUCCESS, policy)
    ).result == Result.PENDING
    await advance_clock(session, policy.payment_grace.total_seconds() + 1)
    fresh = await hold(event.seat_ids[2:4])
    assert (
        await pay_with_card(sessions, gateway, owner, fresh, offline.SUCCESS, policy)
    ).result == Result.CONFIRMED
    (due,) = await payments.due_for_reconciliation(session)
    assert (await payments.reconcile(sessions, gateway, due)).result == Result.REFUND_REQUIRED
    active = "SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.fan_id = :f AND i.state = 'active'"
    assert await _scalar(session, active, f=owner.fan_id) == 2
    (refund,) = await payments.pending_refunds(session)
    assert await _scalar(session, "SELECT reason FROM refunds") == payments.REFUND_REASONS["ticket_cap"]
    assert await payments.make_refund(sessions, gateway, refund)
    # The slow hold's seats are free again for anyone.
    assert await _scalar(session, "SELECT count(*) FROM inventory_units WHERE state = 'sold'") == 2


async def test_a_declined_payment_completed_after_the_fan_bought_elsewhere_is_refunded(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
) -> None:
    """Decline, release, buy up to the cap, then the old payment completes at the provider
    (Stripe keeps a declined intent open for another try): no second set of tickets."""
    policy = HoldPolicy(tickets_per_fan=2)
    owner = Owner(fan_id=await make_fan(session))
    first = await holds.create_hold(
        session,
        owner=owner,
        event_id=event.event_id,
        selection=SeatSelection(tuple(event.seat_ids[:2])),
        policy=policy,
    )
    await session.commit()
    declined = await pay_with_card(sessions, gateway, owner, first.id, offline.DECLINED, policy)
    assert declined.result == Result.FAILED
    await holds.release_hold(session, hold_id=first.id, owner=owner)
    await session.commit()
    second = await holds.create_hold(
        session,
        owner=owner,
        event_id=event.event_id,
        selection=SeatSelection(tuple(event.seat_ids[2:4])),
        policy=policy,
    )
    await session.commit()
    assert (
        await pay_with_card(sessions, gateway, owner, second.id, offline.SUCCESS, policy)
    ).result == Result.CONFIRMED
    ref = str(
        await _scalar(session, "SELECT provider_ref FROM payments WHERE id = :p", p=declined.payment_id)
    )
    async with sessions() as late:
        settled = await payments.settle(
            late, declined.payment_id, GatewayPayment(ref, GatewayStatus.SUCCEEDED, 0, "EUR")
        )
        await late.commit()
    assert settled.result == Result.REFUND_REQUIRED
    assert await _scalar(session, "SELECT count(*) FROM orders WHERE fan_id = :f", f=owner.fan_id) == 1
    assert (
        await _scalar(session, "SELECT count(*) FROM refunds WHERE payment_id = :p", p=declined.payment_id)
        == 1
    )


async def test_a_cancelled_order_refunds_its_payment(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:1])
    paid = await pay_with_card(sessions, gateway, owner, hold_id, offline.SUCCESS)
    assert paid.order_id is not None
    assert await payments.request_order_refund(session, paid.order_id)
    assert await payments.request_order_refund(session, paid.order_id)
    await session.commit()
    (refund,) = await payments.pending_refunds(session)
    assert refund.amount_minor > 0


class _SlowThenRefusing:
    """Tab A's create is slow and succeeds; tab B's create of the same payment is refused by
    the provider (Stripe answers 409 while a key is in use)."""

    provider = PaymentProvider.STRIPE

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.a_inside = asyncio.Event()

    async def create(self, **kw: object) -> GatewayPayment:
        self.calls += 1
        if self.calls == 1:
            self.a_inside.set()
            await self.release.wait()
            return GatewayPayment("pi_A", GatewayStatus.PENDING, 100, "EUR", client_secret="pi_A_secret")
        raise GatewayError("409: a request with this key is in progress")


async def test_a_second_tab_refused_by_the_provider_leaves_the_payment_to_the_first(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], event: SmallEvent
) -> None:
    gateway = _SlowThenRefusing()
    owner, hold_id = await _hold(session, event, event.seat_ids[:1])
    call = dict(gateway=gateway, owner=owner, hold_id=hold_id, method={}, policy=POLICY)
    tab_a = asyncio.create_task(payments.checkout(sessions, **call))  # type: ignore[arg-type]
    await gateway.a_inside.wait()
    tab_b = await payments.checkout(sessions, **call)  # type: ignore[arg-type]
    assert tab_b.result == Result.PENDING
    gateway.release.set()
    first = await tab_a
    assert first.result == Result.PENDING
    assert first.client_secret == "pi_A_secret"
    row = (await session.execute(text("SELECT state, provider_ref FROM payments"))).one()
    assert tuple(row) == ("pending", "pi_A")


async def test_paying_again_for_a_refunded_hold_says_so(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
) -> None:
    owner, hold_id = await _hold(session, event, event.seat_ids[:2])
    await pay_with_card(sessions, gateway, owner, hold_id, offline.LATE_SUCCESS)
    await advance_clock(session, POLICY.payment_grace.total_seconds() + 1)
    await _hold(session, event, event.seat_ids[1:2])
    (due,) = await payments.due_for_reconciliation(session)
    assert (await payments.reconcile(sessions, gateway, due)).result == Result.REFUND_REQUIRED
    again = await pay_with_card(sessions, gateway, owner, hold_id, offline.SUCCESS)
    assert again.result == Result.REFUND_REQUIRED
    assert again.order_id is None


async def test_a_late_success_after_a_decline_racing_a_new_checkout_ends_in_one_booking(
    engine: AsyncEngine, event: SmallEvent, session: AsyncSession
) -> None:
    """Many trials of: the payer's first (declined) payment succeeds after all, while they pay
    again. Never a 500; exactly one booking; any second payment refunded."""
    sessions = make_sessionmaker(engine)
    gateway = OfflineGateway(sessions)
    for seat in event.seat_ids:
        owner, hold_id = await _hold(session, event, [seat])
        declined = await pay_with_card(sessions, gateway, owner, hold_id, offline.DECLINED)
        ref = str(
            await session.scalar(
                text("SELECT provider_ref FROM payments WHERE id = :p"), {"p": declined.payment_id}
            )
        )
        late = GatewayPayment(ref, GatewayStatus.SUCCEEDED, 0, "EUR")

        async def webhook(payment_id: uuid.UUID = declined.payment_id, answer: GatewayPayment = late) -> None:
            async with sessions() as s:
                await payments.settle(s, payment_id, answer)
                await s.commit()

        await asyncio.gather(webhook(), pay_with_card(sessions, gateway, owner, hold_id, offline.SUCCESS))
    orders = await session.scalar(text("SELECT count(*) FROM orders WHERE state = 'confirmed'"))
    assert orders == len(event.seat_ids)
    unsettled = await session.scalar(
        text(
            "SELECT count(*) FROM payments p WHERE (p.state = 'succeeded' OR p.failure_code = 'superseded')"
            " AND p.order_id IS NULL AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id)"
        )
    )
    assert unsettled == 0


async def test_declined_checkouts_cannot_keep_seats_off_sale_for_ever(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    gateway: OfflineGateway,
    event: SmallEvent,
) -> None:
    """The payment grace through checkout's own statement: each retry after a decline is
    kept for the grace again, but never past creation + 15 minutes + the grace."""
    owner, hold_id = await _hold(session, event, event.seat_ids[:1])
    limit = POLICY.max_lifetime + POLICY.payment_grace
    step = POLICY.payment_grace.total_seconds() - 60
    tries = 0
    while True:
        try:
            declined = await pay_with_card(sessions, gateway, owner, hold_id, offline.DECLINED)
        except HoldExpired:
            break
        assert declined.result == Result.FAILED
        tries += 1
        kept = await _scalar(session, "SELECT expires_at - created_at FROM holds WHERE id = :h", h=hold_id)
        assert kept <= limit  # type: ignore[operator]
        await session.rollback()
        await advance_clock(session, step)
    assert 1 < tries <= limit.total_seconds() // step + 1
    assert await _scalar(session, "SELECT state FROM holds WHERE id = :h", h=hold_id) == "failed"
    assert await _scalar(session, "SELECT count(*) FROM payments WHERE hold_id = :h", h=hold_id) == tries


async def test_a_declined_intent_is_cancelled_at_stripe_once_its_hold_gives_up(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], event: SmallEvent
) -> None:
    """While the hold lives, a declined intent stays open (the payer may try another card on
    it); once the fan releases the hold it is cancelled at Stripe, so it can take no money."""
    fake = FakeStripe()
    stripe = StripeGateway(fake.api_key, http_client=fake.http_client)
    owner, hold_id = await _hold(session, event, event.seat_ids[:2])
    started = await payments.checkout(
        sessions, gateway=stripe, owner=owner, hold_id=hold_id, method={}, policy=POLICY
    )
    assert started.result == Result.PENDING
    ref = str(await _scalar(session, "SELECT provider_ref FROM payments WHERE id = :p", p=started.payment_id))
    fake.confirm(ref, card=CARD_DECLINED)
    async with sessions() as s:
        failed = await payments.settle(s, started.payment_id, await stripe.retrieve(ref, hold_overdue=False))
        await s.commit()
    assert failed.result == Result.FAILED
    assert await payments.failed_to_close(session) == []
    await holds.release_hold(session, hold_id=hold_id, owner=owner)
    await session.commit()
    (due,) = await payments.failed_to_close(session)
    assert due.ref == ref
    assert await payments.close_failed(sessions, stripe, due) is None
    assert (await stripe.retrieve(ref, hold_overdue=True)).failure_code == "abandoned"
    with pytest.raises(FakeStripeError):
        fake.confirm(ref, card=CARD_SUCCESS)
    assert await payments.failed_to_close(session) == []


async def test_one_key_created_by_many_at_once_is_one_offline_payment(gateway: OfflineGateway) -> None:
    # The key and its ref are both unique: creates racing on one key must all wait for the
    # first and replay it, never fail on the ref (as fifty checkouts of one hold at once did).
    key = f"race-{uuid.uuid4()}"
    method = {"card_number": offline.SUCCESS}
    for _ in range(5):
        answers = await asyncio.gather(
            *(
                gateway.create(
                    idempotency_key=key, amount_minor=1000, currency="GBP", method=method, metadata={}
                )
                for _ in range(20)
            ),
            return_exceptions=True,
        )
        assert not [a for a in answers if isinstance(a, BaseException)], answers
        assert len({a.ref for a in answers if isinstance(a, GatewayPayment)}) == 1
        key = f"race-{uuid.uuid4()}"
