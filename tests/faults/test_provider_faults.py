"""The payment provider slow, answering 500, and not answering, while fans buy with Stripe.

The API's Stripe SDK talks, with its own HTTP client, to a fake Stripe served over loopback
through a fault proxy (tests/faults/proxy.py), so the SDK's timeouts, retries and idempotent
replays meet the faults as they would on the internet. Each test runs a bounded burst of fans
over HTTP: hold, checkout, the payer confirming in the browser, Stripe sending the webhook a
moment later. The fault is switched on mid-burst and off again; then the reconciliation job
settles what the webhooks refused during the fault were about, the fans carry on, and the
audit checks the database against the promises and against what the fans were told.

Throughout, the API answers 2xx, a 4xx problem, or 503 with Retry-After: never a 500, and
never later than a client's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from booking.payments.models import RECONCILE_AFTER, PaymentProvider
from booking.payments.stripe_gateway import StripeGateway
from booking.settings import Settings, get_settings
from jobs.payments import reconcile_payments
from tests.conftest import _conninfo
from tests.factories import SmallEvent, make_event, make_signed_in_fan
from tests.fakes.stripe import FakeStripe, FakeWebhook
from tests.fakes.stripe_server import StripeServer
from tests.faults.audit import audit
from tests.faults.buyers import Burst, Fan
from tests.faults.proxy import FaultProxy
from tests.live_api import LiveApi

FANS = 24
ARRIVALS_S = 6.0  # fans arrive one after another over this long
FAULT_AT_S = 2.0
FAULT_FOR_S = 6.0
BURST_S = 14.0
SETTLE_S = 10.0
REQUEST_TIMEOUT_S = 15.0  # a fan's (and Stripe's webhook sender's) patience
WEBHOOK_LAG_S = 1.5  # Stripe sends an event's webhook a moment after the event
POLL_S = 0.3  # how often a paying fan's page asks again
DELAY_S = 2.5  # the slow provider: well inside the gateway's 10 s per attempt
GATEWAY_TIMEOUT_S = 1.0  # per attempt, for the test of a provider that does not answer
# The payment breaker's cool-down: short enough for the fans to pay within the burst once the
# fault is over (the default, 30 s, outlasts it), long enough to be seen pausing payments.
BREAKER_COOLDOWN_S = 1.0
PAUSED = "checkout 503 payment-provider-paused"

# The SDK's own HTTPX client sends form bodies as ``data=<str>``, which HTTPX deprecates; it
# says so on every request to Stripe, and it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw:DeprecationWarning")


@dataclass
class StripeFan(Fan):
    confirmed_refs: set[str] = field(default_factory=set)  # intents the payer confirmed


@dataclass
class StripeBurst(Burst):
    """The buying loop of ``Burst`` with Stripe: a pending checkout with a client secret is
    confirmed by the payer at the fake (once per intent), and the fan's page asks again until
    the webhook has confirmed the order; a failed one is paid again."""

    served: StripeServer = field(kw_only=True)
    statuses: Counter[str] = field(default_factory=Counter)  # checkout answers' `status`
    unpromised: list[str] = field(default_factory=list)

    async def _send(
        self,
        client: httpx.AsyncClient,
        step: str,
        path: str,
        body: dict[str, object],
        headers: dict[str, str],
    ) -> httpx.Response | None:
        response = await super()._send(client, step, path, body, headers)
        if response is not None:
            self.unpromised.extend(unpromised(step, response))
        return response

    async def _checkout(self, client: httpx.AsyncClient, fan: Fan) -> bool | None:
        assert isinstance(fan, StripeFan)
        paid = await self._send(
            client,
            "checkout",
            f"/holds/{fan.hold_id}/checkout",
            {"provider": "stripe"},
            {"Authorization": f"Bearer {fan.token}"},
        )
        fan.unsettled = True
        if paid is None or paid.status_code in (429, 503):
            await self._back_off(paid)
            return None
        if paid.status_code != 200:
            fan.unsettled = False
            return False
        answer = paid.json()
        secret = answer["client_secret"]
        self.statuses[
            answer["status"] if secret or answer["status"] != "pending" else "pending, no secret"
        ] += 1
        if answer["status"] == "confirmed":
            fan.order_id, fan.unsettled = str(answer["order_id"]), False
            return True
        if answer["status"] == "refund_required":
            fan.unsettled = False
            return False
        if secret:
            ref = secret.split("_secret_")[0]
            if ref not in fan.confirmed_refs:
                self.served.confirm(ref)  # the payer's browser, with a card that pays
                fan.confirmed_refs.add(ref)
        # Pending: the webhook will settle it. Failed (the provider refused the request, not
        # the card): pay again.
        await asyncio.sleep(POLL_S)
        return None

    async def settle(self, fans: list[Fan], seconds: float = SETTLE_S) -> None:
        """Every fan without a definite answer carries on paying, all at once: one after
        another, as ``Burst.settle`` asks, each would wait for its webhook in turn."""
        await self.run([f for f in fans if f.unsettled and f.order_id is None], seconds)


@dataclass
class StripeWebhooks:
    """Stripe's webhook sender: each event is sent once, ``WEBHOOK_LAG_S`` after it happened.
    One the API refuses is kept in ``refused`` and not sent again here: Stripe's next attempt
    comes minutes later, so what it was about is left for reconciliation to settle."""

    served: StripeServer
    base_url: str
    answers: Counter[str] = field(default_factory=Counter)
    refused: list[FakeWebhook] = field(default_factory=list)
    unpromised: list[str] = field(default_factory=list)
    slowest: float = 0.0

    async def _deliver(self, client: httpx.AsyncClient, hook: FakeWebhook) -> None:
        await asyncio.sleep(WEBHOOK_LAG_S)
        started = time.monotonic()
        try:
            response = await client.post("/webhooks/stripe", content=hook.payload, headers=hook.headers)
        except httpx.TransportError as error:
            self.answers[type(error).__name__] += 1
            self.refused.append(hook)
            return
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)
        self.answers[str(response.status_code)] += 1
        self.unpromised.extend(unpromised("webhook", response))
        if response.status_code != 200:
            self.refused.append(hook)

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """Send while the block runs; on leaving, what was sent has been answered."""
        stop = asyncio.Event()

        async def sender(client: httpx.AsyncClient) -> None:
            sent: set[asyncio.Task[None]] = set()
            while True:
                last = stop.is_set()
                sent.update(
                    asyncio.ensure_future(self._deliver(client, h)) for h in self.served.take_webhooks()
                )
                if last:
                    break
                await asyncio.sleep(0.1)
            await asyncio.gather(*sent)

        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=REQUEST_TIMEOUT_S, limits=httpx.Limits(max_connections=FANS + 5)
        ) as client:
            task = asyncio.ensure_future(sender(client))
            try:
                yield
            finally:
                stop.set()
                await task


def unpromised(step: str, response: httpx.Response) -> list[str]:
    """What is wrong with an answer the API promises never to give: a 5xx other than a 503
    saying when to retry, or a refusal that is not a problem document."""
    status = response.status_code
    problem = response.headers.get("content-type", "").startswith("application/problem+json")
    if status >= 500 and not (status == 503 and response.headers.get("retry-after")):
        return [f"{step}: {status} {response.text[:300]}"]
    if status >= 400 and not problem:
        return [f"{step}: {status} without a problem document: {response.text[:300]}"]
    return []


@dataclass
class Sale:
    burst: StripeBurst
    webhooks: StripeWebhooks
    proxy: FaultProxy
    fake: FakeStripe
    fans: list[Fan]
    reconciled: dict[str, int]
    broken: list[str]
    confirmed_in_db: int

    @property
    def told_confirmed(self) -> set[str]:
        return self.burst.told_confirmed(self.fans)

    def refused_successes(self) -> set[str]:
        """Intents the payer paid whose success webhook the API refused during the fault."""
        return {h.payment_intent_id for h in self.webhooks.refused if h.type == "payment_intent.succeeded"}


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=1, ga_capacity=FANS)


@contextlib.asynccontextmanager
async def _stack(
    settings: Settings, gateway_timeout_s: float | None
) -> AsyncIterator[tuple[StripeServer, FaultProxy, LiveApi]]:
    """The fake Stripe on loopback, the proxy in front of it, and the API configured with the
    proxy as Stripe's address (``BOXOFFICE_STRIPE_API_BASE``)."""
    with StripeServer(FakeStripe()) as served, FaultProxy("127.0.0.1", served.port) as proxy:
        live = LiveApi(
            settings.model_copy(
                update={
                    "stripe_secret_key": SecretStr(served.fake.api_key),
                    "stripe_webhook_secret": SecretStr(served.fake.webhook_secret),
                    "stripe_api_base": proxy.url,
                    "payment_breaker_cooldown_seconds": BREAKER_COOLDOWN_S,
                }
            )
        )
        live.start()
        try:
            if gateway_timeout_s is not None:
                assert live.app is not None
                # Its first use is on the API's loop, and the API closes it when it stops.
                live.app.state.gateways.by_provider[PaymentProvider.STRIPE] = StripeGateway(
                    served.fake.api_key, api_base=proxy.url, timeout_s=gateway_timeout_s
                )
            yield served, proxy, live
        finally:
            live.stop()


async def _reconcile(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, proxy: FaultProxy, fake: FakeStripe
) -> dict[str, int]:
    """The reconciliation job as the worker runs it (settings from the environment), finding
    the pending payments as it would a couple of minutes on."""
    assert settings.database_url is not None
    assert settings.redis_url is not None
    with psycopg.connect(_conninfo(settings.database_url), autocommit=True) as conn:
        conn.execute(
            "UPDATE payments SET updated_at = updated_at - %s WHERE state = 'pending'", (RECONCILE_AFTER,)
        )
    monkeypatch.setenv("BOXOFFICE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BOXOFFICE_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("BOXOFFICE_STRIPE_SECRET_KEY", fake.api_key)
    monkeypatch.setenv("BOXOFFICE_STRIPE_API_BASE", proxy.url)
    get_settings.cache_clear()
    try:
        return await reconcile_payments()
    finally:
        get_settings.cache_clear()


async def _sale(
    settings: Settings,
    session: AsyncSession,
    event: SmallEvent,
    monkeypatch: pytest.MonkeyPatch,
    fault: Callable[[FaultProxy], None],
    *,
    gateway_timeout_s: float | None = None,
    second_fault: Callable[[FaultProxy], None] | None = None,
) -> Sale:
    """A burst with ``fault`` on from ``FAULT_AT_S`` for ``FAULT_FOR_S`` (its second half
    ``second_fault``, if given), then reconciliation, the fans carrying on, and the audit."""
    fans: list[Fan] = [
        StripeFan(token) for _, token in [await make_signed_in_fan(session) for _ in range(FANS)]
    ]
    async with _stack(settings, gateway_timeout_s) as (served, proxy, live):
        burst = StripeBurst(
            live.url,
            event.event_id,
            event.ga_tier_id,
            request_timeout=REQUEST_TIMEOUT_S,
            served=served,
        )
        webhooks = StripeWebhooks(served, live.url)

        async def switch() -> None:
            await asyncio.sleep(FAULT_AT_S)
            fault(proxy)
            if second_fault is None:
                await asyncio.sleep(FAULT_FOR_S)
            else:
                await asyncio.sleep(FAULT_FOR_S / 2)
                second_fault(proxy)
                await asyncio.sleep(FAULT_FOR_S / 2)
            proxy.pass_through()

        async with webhooks.sending():
            await asyncio.gather(burst.run(fans, BURST_S, spread=ARRIVALS_S), switch())
        reconciled = await _reconcile(monkeypatch, settings, proxy, served.fake)
        async with webhooks.sending():
            await burst.settle(fans)
    assert settings.database_url is not None
    told = burst.told_confirmed(fans)
    broken = audit(settings.database_url, event.event_id, told_confirmed=told)
    with psycopg.connect(_conninfo(settings.database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM orders WHERE event_id = %s AND state = 'confirmed'", (event.event_id,)
        ).fetchone()
    return Sale(burst, webhooks, proxy, served.fake, fans, reconciled, broken, row[0] if row else -1)


def _assert_promises_kept(sale: Sale) -> None:
    burst, webhooks = sale.burst, sale.webhooks
    assert sale.broken == [], sale.broken
    assert burst.unpromised == [], burst.unpromised
    assert webhooks.unpromised == [], webhooks.unpromised
    # Every answer came, in time: no fan or webhook sender gave up on one.
    lost = [k for k in burst.answers if not k.split()[1][0].isdigit()]
    assert lost == [], burst.answers
    assert all(k.isdigit() for k in webhooks.answers), webhooks.answers
    assert burst.slowest < REQUEST_TIMEOUT_S
    assert webhooks.slowest < REQUEST_TIMEOUT_S
    # Every fan bought (there is a place for each), and was told so: the fans' count of
    # orders is the database's.
    assert len(sale.told_confirmed) == FANS, (burst.answers, burst.statuses)
    assert sale.confirmed_in_db == FANS
    # Reconciliation settled exactly the payments whose success webhook was refused.
    assert sale.reconciled["errors"] == 0, sale.reconciled
    assert sale.reconciled["confirmed"] == len(sale.refused_successes()), sale.reconciled
    # A retried create never made a second intent: one per idempotency key.
    keys = Counter(i["metadata"].get("idempotency_key") for i in sale.fake.intents.values())
    assert max(keys.values()) == 1, keys


async def test_a_slow_provider_makes_checkouts_wait_and_fails_nobody(
    settings: Settings, session: AsyncSession, event: SmallEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    sale = await _sale(settings, session, event, monkeypatch, lambda proxy: proxy.delay(DELAY_S))
    _assert_promises_kept(sale)
    assert sale.proxy.seen["delay"] > 0
    assert sale.burst.slowest >= DELAY_S  # checkouts did wait on the provider
    assert sale.burst.statuses["failed"] == 0
    assert sale.webhooks.refused == []  # slow, but every webhook was answered
    assert sale.burst.answers[PAUSED] == 0  # slow is not failing: payments never paused


async def test_provider_500s_fail_checkouts_to_pay_again_and_refuse_webhooks_with_503(
    settings: Settings, session: AsyncSession, event: SmallEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    sale = await _sale(settings, session, event, monkeypatch, lambda proxy: proxy.http_500())
    _assert_promises_kept(sale)
    assert sale.proxy.seen["http_500"] > 0
    # Checkouts met the 500s: nothing was charged, and the fans were told to pay again; then
    # the breaker paused payments, and the fans were told to come back (holds kept).
    assert sale.burst.statuses["failed"] > 0, sale.burst.statuses
    assert sale.burst.answers[PAUSED] > 0, sale.burst.answers
    # Webhooks met them too (the API asks Stripe before settling): refused with a 503 to
    # deliver again, and settled by reconciliation instead.
    assert sale.webhooks.answers["503"] > 0, sale.webhooks.answers
    assert sale.refused_successes()


async def test_a_provider_that_does_not_answer_leaves_checkouts_pending_until_it_does(
    settings: Settings, session: AsyncSession, event: SmallEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    sale = await _sale(
        settings,
        session,
        event,
        monkeypatch,
        lambda proxy: proxy.blackhole(),
        # Then the requests arrive and only the answers are lost: the intents exist.
        second_fault=lambda proxy: proxy.blackhole(forward=True),
        gateway_timeout_s=GATEWAY_TIMEOUT_S,
    )
    _assert_promises_kept(sale)
    assert sale.proxy.seen["blackhole"] > 0
    assert sale.proxy.seen["blackhole-forwarded"] > 0
    # Timed-out checkouts are pending, not failed: charged or not, nobody knew yet.
    assert sale.burst.statuses["pending, no secret"] > 0, sale.burst.statuses
    assert sale.burst.statuses["failed"] == 0, sale.burst.statuses
    assert sale.burst.answers[PAUSED] > 0, sale.burst.answers
    assert sale.webhooks.answers["503"] > 0, sale.webhooks.answers
    assert sale.refused_successes()
