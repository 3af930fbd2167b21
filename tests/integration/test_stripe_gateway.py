"""StripeGateway through the real Stripe SDK against the fake Stripe, and webhook verification."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest

from booking.errors import WebhookPayloadMalformed, WebhookSignatureInvalid, WebhookTimestampStale
from booking.payments.gateway import GatewayError, GatewayStatus, GatewayTimeout
from booking.payments.stripe_gateway import StripeGateway
from booking.payments.webhooks import verify_stripe_event
from tests.fakes.stripe import (
    CARD_AUTHENTICATION_REQUIRED,
    CARD_DECLINED,
    CARD_INSUFFICIENT_FUNDS,
    CARD_SUCCESS,
    PM_DECLINED,
    PM_INSUFFICIENT_FUNDS,
    PM_SUCCESS,
    FakeStripe,
    sign_stripe_payload,
)

KEY = "boxoffice-hold-h1-payment-p1"
META = {"hold_id": "h1", "payment_id": "p1"}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeStripe:
    return FakeStripe(clock=clock)


@pytest.fixture
def gateway(fake: FakeStripe) -> StripeGateway:
    return StripeGateway(fake.api_key, http_client=fake.http_client)


async def create(gateway: StripeGateway, key: str = KEY, amount: int = 4500, **method: Any) -> Any:
    return await gateway.create(
        idempotency_key=key, amount_minor=amount, currency="EUR", method=method, metadata=META
    )


async def paid(gateway: StripeGateway, fake: FakeStripe) -> str:
    payment = await create(gateway)
    fake.confirm(payment.ref, card=CARD_SUCCESS)
    return str(payment.ref)


# -- create, confirm, retrieve -------------------------------------------------------------


async def test_create_is_pending_with_a_client_secret(gateway: StripeGateway, fake: FakeStripe) -> None:
    payment = await create(gateway)

    assert payment.status == GatewayStatus.PENDING
    assert payment.ref.startswith("pi_")
    assert payment.client_secret is not None
    assert payment.client_secret.startswith(f"{payment.ref}_secret_")
    assert (payment.amount_minor, payment.currency, payment.failure_code) == (4500, "EUR", None)
    [sent] = fake.requests_to("post", "/v1/payment_intents")
    assert sent.idempotency_key == KEY
    assert sent.params["currency"] == "eur"
    assert sent.params["automatic_payment_methods"] == {"enabled": "true"}
    assert sent.params["metadata"] == {**META, "idempotency_key": KEY}
    assert "confirm" not in sent.params


async def test_a_confirmed_payment_is_retrieved_as_succeeded(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    ref = await paid(gateway, fake)

    payment = await gateway.retrieve(ref, hold_overdue=False)

    assert (payment.ref, payment.status, payment.amount_minor, payment.currency) == (
        ref,
        GatewayStatus.SUCCEEDED,
        4500,
        "EUR",
    )


@pytest.mark.parametrize(
    ("card", "code"),
    [(CARD_DECLINED, "card_declined"), (CARD_INSUFFICIENT_FUNDS, "insufficient_funds")],
)
async def test_a_declined_payment_is_failed_with_its_code(
    gateway: StripeGateway, fake: FakeStripe, card: str, code: str
) -> None:
    payment = await create(gateway)
    fake.confirm(payment.ref, card=card)

    failed = await gateway.retrieve(payment.ref, hold_overdue=False)

    assert (failed.status, failed.failure_code) == (GatewayStatus.FAILED, code)


async def test_a_payer_retrying_after_a_decline_can_still_succeed(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    payment = await create(gateway)
    fake.confirm(payment.ref, card=CARD_DECLINED)
    fake.confirm(payment.ref, card=CARD_SUCCESS)

    assert (await gateway.retrieve(payment.ref, hold_overdue=False)).status == GatewayStatus.SUCCEEDED


async def test_authentication_in_progress_is_pending_and_cancelled_is_failed(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    payment = await create(gateway)
    fake.confirm(payment.ref, card=CARD_AUTHENTICATION_REQUIRED)
    assert (await gateway.retrieve(payment.ref, hold_overdue=False)).status == GatewayStatus.PENDING

    fake.cancel(payment.ref)
    cancelled = await gateway.retrieve(payment.ref, hold_overdue=False)
    assert (cancelled.status, cancelled.failure_code) == (GatewayStatus.FAILED, "abandoned")


@pytest.mark.parametrize(
    ("payment_method", "status", "code"),
    [
        (PM_SUCCESS, GatewayStatus.SUCCEEDED, None),
        (PM_DECLINED, GatewayStatus.FAILED, "card_declined"),
        (PM_INSUFFICIENT_FUNDS, GatewayStatus.FAILED, "insufficient_funds"),
    ],
)
async def test_a_server_side_confirmation_answers_with_the_outcome(
    gateway: StripeGateway, fake: FakeStripe, payment_method: str, status: GatewayStatus, code: str | None
) -> None:
    payment = await create(gateway, payment_method=payment_method)

    assert (payment.status, payment.failure_code) == (status, code)
    assert payment.ref in fake.intents
    [sent] = fake.requests_to("post", "/v1/payment_intents")
    assert sent.params["automatic_payment_methods"] == {"enabled": "true", "allow_redirects": "never"}
    # A declined create is replayed as the same decline, not charged again.
    assert await create(gateway, payment_method=payment_method) == payment
    assert len(fake.intents) == 1


async def test_an_unknown_reference_or_a_wrong_key_is_a_gateway_error(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    with pytest.raises(GatewayError, match="404") as missing:
        await gateway.retrieve("pi_unknown", hold_overdue=False)
    assert not isinstance(missing.value, GatewayTimeout)

    wrong_key = StripeGateway("sk_test_not_ours", http_client=fake.http_client)
    with pytest.raises(GatewayError, match="401"):
        await create(wrong_key)


# -- idempotency, retries, timeouts --------------------------------------------------------


async def test_a_repeated_create_replays_the_same_intent(gateway: StripeGateway, fake: FakeStripe) -> None:
    first = await create(gateway)
    again = await create(gateway)

    assert again.ref == first.ref
    assert len(fake.intents) == 1
    assert [r.outcome for r in fake.requests_to("post", "/v1/payment_intents")] == ["ok", "replayed"]


async def test_the_same_key_with_another_amount_is_refused(gateway: StripeGateway, fake: FakeStripe) -> None:
    await create(gateway)

    with pytest.raises(GatewayError, match="idempotency key"):
        await create(gateway, amount=9900)
    assert len(fake.intents) == 1


async def test_a_500_on_create_is_retried_by_the_sdk(gateway: StripeGateway, fake: FakeStripe) -> None:
    fake.fail_next(2)

    payment = await create(gateway)

    assert payment.status == GatewayStatus.PENDING
    sent = fake.requests_to("post", "/v1/payment_intents")
    assert [r.outcome for r in sent] == ["500", "500", "ok"]
    assert {r.idempotency_key for r in sent} == {KEY}
    assert len(fake.http_client.sleeps) == 2


async def test_a_500_after_the_last_retry_is_a_gateway_error(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    fake.fail_next(3)

    with pytest.raises(GatewayError) as raised:
        await create(gateway)

    assert not isinstance(raised.value, GatewayTimeout)
    assert fake.intents == {}
    # Nothing was made, so the next attempt with the same key creates the intent.
    assert (await create(gateway)).status == GatewayStatus.PENDING


async def test_a_lost_answer_is_replayed_by_the_sdk_retry(gateway: StripeGateway, fake: FakeStripe) -> None:
    fake.time_out_next(1, processed=True)

    payment = await create(gateway)

    assert list(fake.intents) == [payment.ref]
    assert [r.outcome for r in fake.requests_to("post", "/v1/payment_intents")] == [
        "timeout-processed",
        "replayed",
    ]


async def test_a_processed_timeout_is_a_gateway_timeout_and_find_recovers_the_intent(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    fake.time_out_next(3, processed=True)

    with pytest.raises(GatewayTimeout):
        await create(gateway)

    [ref] = fake.intents
    found = await gateway.find(KEY)
    assert found is not None
    assert (found.ref, found.status, found.amount_minor) == (ref, GatewayStatus.PENDING, 4500)
    assert await gateway.find("boxoffice-hold-h1-payment-other") is None


async def test_an_unprocessed_timeout_leaves_nothing_to_find(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    fake.time_out_next(3)

    with pytest.raises(GatewayTimeout):
        await create(gateway)

    assert fake.intents == {}
    assert await gateway.find(KEY) is None


async def test_find_sees_an_intent_only_once_search_has_caught_up(
    gateway: StripeGateway, fake: FakeStripe, clock: Clock
) -> None:
    fake.search_lag_s = 60
    payment = await create(gateway)

    assert await gateway.find(KEY) is None
    clock.now += 61
    found = await gateway.find(KEY)
    assert found is not None
    assert found.ref == payment.ref


async def test_find_quotes_the_key_in_the_search_query(gateway: StripeGateway, fake: FakeStripe) -> None:
    odd = "key-with-'quote'-and-\\"
    payment = await create(gateway, key=odd)
    await create(gateway, key="key-with-")

    found = await gateway.find(odd)

    assert found is not None
    assert found.ref == payment.ref


# -- refunds ---------------------------------------------------------------------------------


async def test_a_refund_succeeds_and_is_idempotent(gateway: StripeGateway, fake: FakeStripe) -> None:
    ref = await paid(gateway, fake)

    first = await gateway.refund(ref=ref, amount_minor=4500, currency="EUR", idempotency_key="refund-1")
    again = await gateway.refund(ref=ref, amount_minor=4500, currency="EUR", idempotency_key="refund-1")

    assert first.status == GatewayStatus.SUCCEEDED
    assert first.ref.startswith("re_")
    assert again == first
    assert len(fake.refunds) == 1
    sent = fake.requests_to("post", "/v1/refunds")
    assert sent[0].params == {"payment_intent": ref, "amount": "4500"}
    # Another key asks for a second refund, which Stripe refuses: the money went back once,
    # and the answer says so (the payer has their money, whoever asked first).
    second = await gateway.refund(ref=ref, amount_minor=4500, currency="EUR", idempotency_key="refund-2")
    assert (second.status, second.failure_code) == (GatewayStatus.SUCCEEDED, "already_refunded")
    assert len(fake.refunds) == 1


async def test_a_partial_refund_leaves_the_rest(gateway: StripeGateway, fake: FakeStripe) -> None:
    ref = await paid(gateway, fake)

    assert (
        await gateway.refund(ref=ref, amount_minor=1500, currency="EUR", idempotency_key="r1")
    ).status == GatewayStatus.SUCCEEDED
    assert (
        await gateway.refund(ref=ref, amount_minor=3000, currency="EUR", idempotency_key="r2")
    ).status == GatewayStatus.SUCCEEDED
    # Nothing is left: whatever this one was for is back with the payer already.
    third = await gateway.refund(ref=ref, amount_minor=1, currency="EUR", idempotency_key="r3")
    assert third.failure_code == "already_refunded"


async def test_a_refund_of_an_unpaid_intent_is_a_gateway_error(
    gateway: StripeGateway, fake: FakeStripe
) -> None:
    payment = await create(gateway)

    with pytest.raises(GatewayError):
        await gateway.refund(ref=payment.ref, amount_minor=4500, currency="EUR", idempotency_key="r1")
    assert fake.refunds == {}


async def test_a_refund_whose_answer_was_lost_is_replayed(gateway: StripeGateway, fake: FakeStripe) -> None:
    ref = await paid(gateway, fake)
    fake.time_out_next(3, processed=True)

    with pytest.raises(GatewayTimeout):
        await gateway.refund(ref=ref, amount_minor=4500, currency="EUR", idempotency_key="r1")
    retried = await gateway.refund(ref=ref, amount_minor=4500, currency="EUR", idempotency_key="r1")

    assert retried.status == GatewayStatus.SUCCEEDED
    assert list(fake.refunds) == [retried.ref]


# -- webhooks --------------------------------------------------------------------------------


async def test_webhooks_verify_even_when_delivered_twice_and_out_of_order(
    gateway: StripeGateway, fake: FakeStripe, clock: Clock
) -> None:
    declined = await create(gateway, key="k-declined")
    succeeded = await create(gateway, key="k-succeeded")
    fake.confirm(declined.ref, card=CARD_DECLINED)
    fake.confirm(succeeded.ref, card=CARD_SUCCESS)
    hooks = fake.take_webhooks()
    assert fake.take_webhooks() == []

    deliveries = [*reversed(hooks), *hooks]
    events = [
        verify_stripe_event(h.payload, h.signature, fake.webhook_secret, now=clock.now) for h in deliveries
    ]

    assert [(e.type, e.payment_intent_id) for e in events[:2]] == [
        ("payment_intent.succeeded", succeeded.ref),
        ("payment_intent.payment_failed", declined.ref),
    ]
    assert events[2:] == events[1::-1]
    assert {e.id for e in events} == {h.event_id for h in hooks}
    assert events[0].created == dt.datetime.fromtimestamp(int(clock.now), tz=dt.UTC)


async def test_a_late_delivery_is_accepted_once_stripe_signs_it_again(
    gateway: StripeGateway, fake: FakeStripe, clock: Clock
) -> None:
    fake.confirm((await create(gateway)).ref, card=CARD_SUCCESS)
    [hook] = fake.take_webhooks()
    clock.now += 3600

    with pytest.raises(WebhookTimestampStale):
        verify_stripe_event(hook.payload, hook.signature, fake.webhook_secret, now=clock.now)
    retry = hook.resigned(int(clock.now))
    assert verify_stripe_event(retry.payload, retry.signature, fake.webhook_secret, now=clock.now).id == (
        hook.event_id
    )


def event_payload(**fields: Any) -> bytes:
    event = {
        "id": "evt_1",
        "object": "event",
        "type": "charge.refunded",
        "created": 1_700_000_000,
        "data": {"object": {"id": "ch_1", "object": "charge", "payment_intent": "pi_1"}},
        **fields,
    }
    return json.dumps(event).encode()


SECRET = "whsec_test"


def test_a_correctly_signed_event_is_read() -> None:
    payload = event_payload()
    now = int(time.time())

    event = verify_stripe_event(payload, sign_stripe_payload(payload, SECRET, now), SECRET)

    assert (event.id, event.type, event.payment_intent_id) == ("evt_1", "charge.refunded", "pi_1")
    assert event.created == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)


def test_a_rolled_secret_is_accepted_among_several_signatures() -> None:
    payload = event_payload()
    now = int(time.time())
    old = sign_stripe_payload(payload, "whsec_old", now)
    new = sign_stripe_payload(payload, SECRET, now).split(",")[1]

    assert verify_stripe_event(payload, f"{old},{new}", SECRET).id == "evt_1"


def test_an_altered_payload_is_rejected() -> None:
    payload = event_payload()
    signature = sign_stripe_payload(payload, SECRET, int(time.time()))

    with pytest.raises(WebhookSignatureInvalid):
        verify_stripe_event(payload.replace(b"pi_1", b"pi_2"), signature, SECRET)


def test_a_wrong_secret_is_rejected() -> None:
    payload = event_payload()

    with pytest.raises(WebhookSignatureInvalid):
        verify_stripe_event(payload, sign_stripe_payload(payload, "whsec_other", int(time.time())), SECRET)


def test_a_stale_timestamp_is_rejected_even_when_correctly_signed() -> None:
    payload = event_payload()
    old = int(time.time()) - 301

    with pytest.raises(WebhookTimestampStale) as raised:
        verify_stripe_event(payload, sign_stripe_payload(payload, SECRET, old), SECRET)
    assert raised.value.status == 400
    assert raised.value.code == "webhook-timestamp-stale"
    assert verify_stripe_event(payload, sign_stripe_payload(payload, SECRET, old), SECRET, tolerance_s=600)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", "t=abc,v1=00", "t=1700000000", "v1=deadbeef", "t=1700000000,v0=deadbeef"],
)
def test_a_garbage_header_is_rejected(header: str | None) -> None:
    with pytest.raises(WebhookSignatureInvalid):
        verify_stripe_event(event_payload(), header, SECRET)


def test_no_configured_secret_accepts_nothing() -> None:
    payload = event_payload()

    with pytest.raises(WebhookSignatureInvalid):
        verify_stripe_event(payload, sign_stripe_payload(payload, "", int(time.time())), "")


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"object": "charge", "id": "ch_1"}).encode(),
        event_payload(data=None),
        event_payload(created="yesterday"),
        b"\xff\xfe",
    ],
)
def test_a_signed_body_that_is_not_an_event_is_malformed(payload: bytes) -> None:
    header = sign_stripe_payload(payload, SECRET, int(time.time()))

    with pytest.raises((WebhookPayloadMalformed, WebhookSignatureInvalid)) as raised:
        verify_stripe_event(payload, header, SECRET)
    # Only a body that is not UTF-8 text cannot even be checked against its signature.
    assert isinstance(raised.value, WebhookSignatureInvalid) == (payload == b"\xff\xfe")


def test_an_event_about_nothing_we_sell_has_no_payment_intent() -> None:
    payload = event_payload(type="customer.created", data={"object": {"id": "cus_1", "object": "customer"}})

    event = verify_stripe_event(payload, sign_stripe_payload(payload, SECRET, int(time.time())), SECRET)

    assert event.payment_intent_id is None
