"""The fan journey with Stripe, whose servers are replaced by a fake at the SDK's HTTP-client
boundary: checkout, the payer confirming in the browser, webhooks late, twice and out of
order, declines, provider errors and timeouts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.db import make_sessionmaker
from booking.payments import service as payments
from booking.payments.models import PaymentProvider
from booking.settings import Settings
from tests.api.conftest import SignedIn, sign_up
from tests.factories import SmallEvent, advance_clock, make_event
from tests.fakes.stripe import CARD_DECLINED, CARD_SUCCESS, FakeStripe
from tests.live_api import stripe_api_client


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
async def stripe_api(settings: Settings, fake: FakeStripe) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with stripe_api_client(settings, fake) as client:
        yield client


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=6, ga_capacity=2)


@pytest.fixture
async def fan(stripe_api: AsyncTestClient[Litestar]) -> SignedIn:
    return await sign_up(stripe_api)


async def _checkout(
    api: AsyncTestClient[Litestar], fan: SignedIn, event: SmallEvent, seats: list[int]
) -> dict[str, object]:
    held = await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": seats},
        headers={**fan.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert held.status_code == 201, held.text
    paid = await api.post(
        f"/holds/{held.json()['id']}/checkout", json={"provider": "stripe"}, headers=fan.headers
    )
    assert paid.status_code == 200, paid.text
    return dict(paid.json())


async def _ref(session: AsyncSession, payment_id: object) -> str:
    return str(
        await session.scalar(text("SELECT provider_ref FROM payments WHERE id = :p"), {"p": payment_id})
    )


async def _deliver(api: AsyncTestClient[Litestar], hook: object) -> dict[str, object]:
    response = await api.post("/webhooks/stripe", content=hook.payload, headers=hook.headers)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_paid_in_the_browser_and_told_by_webhooks_twice_and_out_of_order(
    stripe_api: AsyncTestClient[Litestar],
    fake: FakeStripe,
    fan: SignedIn,
    event: SmallEvent,
    session: AsyncSession,
) -> None:
    started = await _checkout(stripe_api, fan, event, event.seat_ids[:2])
    assert started["status"] == "pending"
    assert str(started["client_secret"]).startswith("pi_")
    ref = await _ref(session, started["payment_id"])
    fake.confirm(ref, card=CARD_DECLINED)
    fake.confirm(ref, card=CARD_SUCCESS)  # the payer tries another card on the same page
    declined, succeeded = fake.take_webhooks()
    # The success arrives first, then again, then the stale decline.
    assert (await _deliver(stripe_api, succeeded))["outcome"] == "confirmed"
    assert (await _deliver(stripe_api, succeeded))["outcome"] == "confirmed"
    assert (await _deliver(stripe_api, declined))["outcome"] == "confirmed"
    assert await session.scalar(text("SELECT count(*) FROM orders WHERE state = 'confirmed'")) == 1
    assert await session.scalar(text("SELECT count(*) FROM tickets")) == 2
    again = await stripe_api.post(
        f"/holds/{started['hold_id']}/checkout", json={"provider": "stripe"}, headers=fan.headers
    )
    assert again.json()["status"] == "confirmed"
    assert len(fake.intents) == 1


async def test_a_decline_then_a_success_on_the_same_intent_still_books(
    stripe_api: AsyncTestClient[Litestar],
    fake: FakeStripe,
    fan: SignedIn,
    event: SmallEvent,
    session: AsyncSession,
) -> None:
    started = await _checkout(stripe_api, fan, event, event.seat_ids[:1])
    ref = await _ref(session, started["payment_id"])
    fake.confirm(ref, card=CARD_DECLINED)
    (declined,) = fake.take_webhooks()
    assert (await _deliver(stripe_api, declined))["outcome"] == "failed"
    fake.confirm(ref, card=CARD_SUCCESS)
    (succeeded,) = fake.take_webhooks()
    assert (await _deliver(stripe_api, succeeded))["outcome"] == "confirmed"
    assert await session.scalar(text("SELECT count(*) FROM orders")) == 1


async def test_a_forged_or_altered_webhook_is_refused_and_changes_nothing(
    stripe_api: AsyncTestClient[Litestar],
    fake: FakeStripe,
    fan: SignedIn,
    event: SmallEvent,
    session: AsyncSession,
) -> None:
    started = await _checkout(stripe_api, fan, event, event.seat_ids[:1])
    fake.confirm(await _ref(session, started["payment_id"]), card=CARD_SUCCESS)
    (hook,) = fake.take_webhooks()
    altered = hook.payload.replace(b"succeeded", b"succeedeD")
    for content, headers in (
        (altered, hook.headers),
        (hook.payload, {"Stripe-Signature": "t=1,v1=deadbeef"}),
        (hook.payload, {}),
    ):
        response = await stripe_api.post("/webhooks/stripe", content=content, headers=headers)
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await session.scalar(text("SELECT count(*) FROM orders")) == 0


async def test_provider_errors_and_a_lost_answer(
    stripe_api: AsyncTestClient[Litestar],
    fake: FakeStripe,
    fan: SignedIn,
    event: SmallEvent,
    session: AsyncSession,
) -> None:
    fake.fail_next(3)  # the first try and both SDK retries
    failed = await _checkout(stripe_api, fan, event, event.seat_ids[:1])
    assert (failed["status"], failed["failure_code"]) == ("failed", "gateway_error")

    fake.time_out_next(3, processed=True)  # the first try and both SDK retries
    pending = await _checkout(stripe_api, await sign_up(stripe_api), event, event.seat_ids[1:2])
    assert pending["status"] == "pending"
    assert len(fake.intents) == 1  # created once, however often the SDK retried
    (intent_id,) = fake.intents
    fake.confirm(intent_id, card=CARD_SUCCESS)
    fake.take_webhooks()  # lost: we have no reference for it yet anyway
    await session.execute(
        text("UPDATE payments SET updated_at = now() - interval '5 minutes' WHERE state = 'pending'")
    )
    await session.commit()
    gateways = stripe_api.app.state.gateways
    sessions = make_sessionmaker(session.bind)  # type: ignore[arg-type]
    (due,) = await payments.due_for_reconciliation(session)
    settled = await payments.reconcile(sessions, gateways.get(PaymentProvider.STRIPE), due)
    assert settled.result.value == "confirmed"


async def test_an_abandoned_payment_is_cancelled_at_stripe_and_the_hold_lets_go(
    stripe_api: AsyncTestClient[Litestar],
    fake: FakeStripe,
    fan: SignedIn,
    event: SmallEvent,
    session: AsyncSession,
) -> None:
    started = await _checkout(stripe_api, fan, event, event.seat_ids[:1])
    ref = await _ref(session, started["payment_id"])
    sessions = make_sessionmaker(session.bind)  # type: ignore[arg-type]
    gateway = stripe_api.app.state.gateways.get(PaymentProvider.STRIPE)
    # Past the grace, but not long enough to call it abandoned: still waiting for the payer.
    await advance_clock(session, 11 * 60)
    (due,) = await payments.due_for_reconciliation(session)
    assert (await payments.reconcile(sessions, gateway, due)).result.value == "pending"
    await advance_clock(session, 3600)
    (due,) = await payments.due_for_reconciliation(session)
    assert due.abandoned
    assert (await payments.reconcile(sessions, gateway, due)).result.value == "failed"
    assert fake.intents[ref]["status"] == "canceled"
    assert await payments.due_for_reconciliation(session) == []


async def test_a_webhook_finds_a_payment_by_its_metadata_before_its_reference_is_recorded(
    stripe_api: AsyncTestClient[Litestar],
    fake: FakeStripe,
    fan: SignedIn,
    event: SmallEvent,
    session: AsyncSession,
) -> None:
    """The create's answer was lost, so we hold no reference; the payer pays anyway and the
    webhook, matched on our payment id in the intent's metadata, confirms the order."""
    fake.time_out_next(3, processed=True)  # the first try and both SDK retries
    pending = await _checkout(stripe_api, fan, event, event.seat_ids[:1])
    assert pending["status"] == "pending"
    assert await session.scalar(text("SELECT provider_ref FROM payments")) is None
    (intent_id,) = fake.intents
    fake.confirm(intent_id, card=CARD_SUCCESS)
    (succeeded,) = fake.take_webhooks()
    assert (await _deliver(stripe_api, succeeded))["outcome"] == "confirmed"
    await session.rollback()
    assert await session.scalar(text("SELECT provider_ref FROM payments")) == intent_id
    assert await session.scalar(text("SELECT count(*) FROM orders WHERE state = 'confirmed'")) == 1


async def test_a_webhook_for_a_payment_not_committed_yet_is_asked_for_again(
    stripe_api: AsyncTestClient[Litestar], fake: FakeStripe, session: AsyncSession
) -> None:
    """Its metadata names one of our payments that is not here (yet): 503, nothing stored,
    so Stripe's redelivery is handled afresh. An intent that names none is not ours."""
    gateway = stripe_api.app.state.gateways.get(PaymentProvider.STRIPE)
    for name, metadata in (("ours", {"payment_id": str(uuid.uuid4())}), ("foreign", {})):
        created = await gateway.create(
            idempotency_key=f"elsewhere-{name}",
            amount_minor=1000,
            currency="EUR",
            method={},
            metadata=metadata,
        )
        fake.confirm(created.ref, card=CARD_SUCCESS)
    ours, foreign = fake.take_webhooks()
    for _ in range(2):
        response = await stripe_api.post("/webhooks/stripe", content=ours.payload, headers=ours.headers)
        assert response.status_code == 503, response.text
        assert response.json()["type"].endswith("/payment-not-recorded-yet")
        assert int(response.headers["retry-after"]) > 0
    assert (await _deliver(stripe_api, foreign))["outcome"] == "ignored"
    stored = await session.scalar(
        text("SELECT count(*) FROM idempotency_keys WHERE scope = 'webhook:stripe'")
    )
    assert stored == 1


async def test_a_payment_stripe_never_made_fails_only_once_its_search_would_show_it(
    stripe_api: AsyncTestClient[Litestar],
    fake: FakeStripe,
    fan: SignedIn,
    event: SmallEvent,
    session: AsyncSession,
) -> None:
    """The create never reached Stripe. Not finding the intent right after proves nothing
    (Stripe's search lags behind its creates), so the payment stays pending until the lag is
    over, and only then fails as not created, letting the hold go."""
    fake.time_out_next(3, processed=False)
    pending = await _checkout(stripe_api, fan, event, event.seat_ids[:1])
    assert pending["status"] == "pending"
    assert fake.intents == {}
    sessions = make_sessionmaker(session.bind)  # type: ignore[arg-type]
    gateway = stripe_api.app.state.gateways.get(PaymentProvider.STRIPE)
    await advance_clock(session, 11 * 60)  # the hold's payment grace is over
    (due,) = await payments.due_for_reconciliation(session)
    assert due.hold_overdue
    assert not due.searchable
    assert (await payments.reconcile(sessions, gateway, due)).result.value == "pending"
    await session.execute(
        text("UPDATE payments SET created_at = created_at - :lag"), {"lag": payments.SEARCH_LAG}
    )
    await session.commit()
    (due,) = await payments.due_for_reconciliation(session)
    settled = await payments.reconcile(sessions, gateway, due)
    assert (settled.result.value, settled.failure_code) == ("failed", "not_created")
