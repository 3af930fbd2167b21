"""The breaker around the payment provider, in checkout and in the jobs, with Stripe's servers
replaced by the fake at the SDK's HTTP-client boundary and made to fail.

Provider failures (500s, no answer) open the breaker; then checkout answers 503 with
Retry-After at once, sends Stripe nothing, and keeps the fan's hold: still ``active``, its
deadline moved on as a checkout's would be, never past the cap a paying hold has. After the
cool-down one trial goes through, and its success closes the breaker. A decline is an answer,
never a failure. And money is never lost: a payment whose answer was lost as the breaker
opened is settled by reconciliation, whose run has a breaker of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from booking.db import make_sessionmaker
from booking.holds.policy import MAX_LIFETIME
from booking.payments import offline
from booking.payments.breaker import BreakerState, ProviderBreaker
from booking.payments.models import PaymentProvider
from booking.payments.registry import Gateways
from booking.payments.stripe_gateway import StripeGateway
from booking.settings import Settings
from jobs.payments import reconcile_with
from tests.api.conftest import SignedIn, sign_up
from tests.factories import SmallEvent, advance_clock, make_event
from tests.fakes.stripe import CARD_SUCCESS, FakeStripe
from tests.live_api import stripe_api_client, with_stripe

FAILURES = 2
COOLDOWN_S = 300.0  # longer than any test here: the breaker stays open until a test waits
SHORT_COOLDOWN_S = 0.3
GRACE = dt.timedelta(seconds=600)  # the default BOXOFFICE_PAYMENT_GRACE_SECONDS


def _breaker_settings(
    settings: Settings, *, failures: int = FAILURES, cooldown_s: float = COOLDOWN_S
) -> Settings:
    return settings.model_copy(
        update={"payment_breaker_failures": failures, "payment_breaker_cooldown_seconds": cooldown_s}
    )


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
async def event(session: AsyncSession) -> SmallEvent:
    return await make_event(session, seats=8, ga_capacity=2)


@pytest.fixture
async def api(settings: Settings, fake: FakeStripe) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with stripe_api_client(_breaker_settings(settings), fake) as client:
        yield client


def _stripe_breaker(api: AsyncTestClient[Litestar]) -> ProviderBreaker:
    gateways: Gateways = api.app.state.gateways
    return gateways.breaker(PaymentProvider.STRIPE)


async def _hold(
    api: AsyncTestClient[Litestar], fan: SignedIn, event: SmallEvent, seat: int
) -> dict[str, Any]:
    held = await api.post(
        "/holds",
        json={"event_id": str(event.event_id), "seat_ids": [seat]},
        headers={**fan.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert held.status_code == 201, held.text
    return dict(held.json())


async def _pay(
    api: AsyncTestClient[Litestar], fan: SignedIn, hold_id: str, body: dict[str, str] | None = None
) -> Any:
    return await api.post(
        f"/holds/{hold_id}/checkout", json=body or {"provider": "stripe"}, headers=fan.headers
    )


async def _bought(api: AsyncTestClient[Litestar], event: SmallEvent, seat: int) -> dict[str, Any]:
    """A new fan holds ``seat`` and checks out with Stripe; the answer's body."""
    fan = await sign_up(api)
    paid = await _pay(api, fan, (await _hold(api, fan, event, seat))["id"])
    assert paid.status_code == 200, paid.text
    return dict(paid.json())


async def _open_by_failures(api: AsyncTestClient[Litestar], fake: FakeStripe, event: SmallEvent) -> None:
    """``FAILURES`` checkouts meet a failing Stripe: one answers 500 (to the first try and both
    of the SDK's retries), one does not answer at all."""
    fake.fail_next(3)
    failed = await _bought(api, event, event.seat_ids[0])
    assert (failed["status"], failed["failure_code"]) == ("failed", "gateway_error")
    fake.time_out_next(3)
    assert (await _bought(api, event, event.seat_ids[1]))["status"] == "pending"
    assert _stripe_breaker(api).state is BreakerState.OPEN


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def _units_held_until(session: AsyncSession, hold_id: str) -> set[tuple[str, dt.datetime]]:
    await session.rollback()  # a new snapshot: the API committed since
    rows = await session.execute(
        text("SELECT state, held_until FROM inventory_units WHERE hold_id = :h"), {"h": hold_id}
    )
    return {(str(state), held_until) for state, held_until in rows}


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"provider": "stripe"}) or 0.0


async def test_failures_open_the_breaker_and_checkout_then_answers_503_and_keeps_the_hold(
    api: AsyncTestClient[Litestar], fake: FakeStripe, event: SmallEvent, session: AsyncSession
) -> None:
    await _open_by_failures(api, fake, event)
    assert _sample("boxoffice_payment_breaker_state") == 2
    refused_before = _sample("boxoffice_payment_breaker_refused_total")

    fan = await sign_up(api)
    hold = await _hold(api, fan, event, event.seat_ids[2])
    seen = len(fake.requests)
    paused = await _pay(api, fan, hold["id"])

    assert paused.status_code == 503, paused.text
    assert paused.headers["content-type"].startswith("application/problem+json")
    problem = paused.json()
    assert problem["type"] == "https://boxoffice.dev/problems/payment-provider-paused"
    retry_after = int(paused.headers["retry-after"])
    assert 1 <= retry_after <= COOLDOWN_S
    assert problem["retry_after"] == retry_after
    assert len(fake.requests) == seen  # Stripe was not asked
    assert _sample("boxoffice_payment_breaker_refused_total") == refused_before + 1

    now = (await api.get(f"/holds/{hold['id']}", headers=fan.headers)).json()
    # Still the fan's, as it was (not moved to paying, no renewal used), for longer.
    assert (now["state"], now["renewals"]) == ("active", 0)
    assert _when(now["expires_at"]) > _when(hold["expires_at"])
    assert _when(problem["held_until"]) == _when(now["expires_at"])
    assert await _units_held_until(session, hold["id"]) == {("held", _when(now["expires_at"]))}
    payments = await session.scalar(
        text("SELECT count(*) FROM payments WHERE hold_id = :h"), {"h": hold["id"]}
    )
    assert payments == 0

    # Asking again changes nothing at Stripe, and the hold stays active.
    again = await _pay(api, fan, hold["id"])
    assert again.status_code == 503
    assert len(fake.requests) == seen
    assert (await api.get(f"/holds/{hold['id']}", headers=fan.headers)).json()["state"] == "active"


async def test_a_paused_checkout_never_keeps_a_hold_past_the_cap_of_a_paying_one(
    api: AsyncTestClient[Litestar], fake: FakeStripe, event: SmallEvent, session: AsyncSession
) -> None:
    """However long the outage and however often the fan asks, a hold is kept at most until
    ``created_at + max_lifetime + payment grace``, as a hold in payment is: then it expires."""
    await _open_by_failures(api, fake, event)
    fan = await sign_up(api)
    hold = await _hold(api, fan, event, event.seat_ids[2])

    async def paused_until() -> dt.datetime:
        answer = await _pay(api, fan, hold["id"])
        assert answer.status_code == 503, answer.text
        return _when(answer.json()["held_until"])

    async def created() -> dt.datetime:
        await session.rollback()
        value = await session.scalar(text("SELECT created_at FROM holds WHERE id = :h"), {"h": hold["id"]})
        assert isinstance(value, dt.datetime)
        return value

    cap = MAX_LIFETIME + GRACE
    kept = await paused_until()
    # Each ask comes before the hold's deadline (it is kept from the grace to the cap).
    for minutes in (9, 9, 6.5):
        await advance_clock(session, minutes * 60)
        later = await paused_until()
        assert later >= kept - dt.timedelta(minutes=minutes)  # never shortened
        assert later <= await created() + cap
        kept = later
    assert kept == await created() + cap  # reached the cap, and held there
    await advance_clock(session, 60)
    expired = await _pay(api, fan, hold["id"])
    assert expired.status_code == 409, expired.text
    assert expired.json()["type"].endswith("/hold-expired")


async def test_after_the_cool_down_one_trial_goes_through_and_its_success_closes_the_breaker(
    settings: Settings, fake: FakeStripe, event: SmallEvent, session: AsyncSession
) -> None:
    async with stripe_api_client(
        _breaker_settings(settings, failures=1, cooldown_s=SHORT_COOLDOWN_S), fake
    ) as api:
        fan = await sign_up(api)
        hold = await _hold(api, fan, event, event.seat_ids[1])
        fake.time_out_next(3)
        assert (await _bought(api, event, event.seat_ids[0]))["status"] == "pending"
        breaker = _stripe_breaker(api)
        assert breaker.state is BreakerState.OPEN  # (the 503s while open: the first test)

        await asyncio.sleep((breaker.paused_for() or 0.0) + SHORT_COOLDOWN_S / 3)  # the cool-down
        assert breaker.paused_for() is None
        seen = len(fake.requests)
        trial = await _pay(api, fan, hold["id"])
        assert trial.status_code == 200, trial.text
        answer = trial.json()
        assert answer["status"] == "pending"
        assert answer["client_secret"]  # for the browser to pay
        assert len(fake.requests) == seen + 1
        assert breaker.state is BreakerState.CLOSED
        assert _sample("boxoffice_payment_breaker_state") == 0

        fake.confirm(answer["client_secret"].split("_secret_")[0], card=CARD_SUCCESS)
        (succeeded,) = fake.take_webhooks()
        delivered = await api.post("/webhooks/stripe", content=succeeded.payload, headers=succeeded.headers)
        assert delivered.status_code == 200, delivered.text
        assert delivered.json()["outcome"] == "confirmed"


async def test_declines_are_answers_and_never_open_the_breaker(
    api: AsyncTestClient[Litestar], event: SmallEvent
) -> None:
    fan = await sign_up(api)
    hold = await _hold(api, fan, event, event.seat_ids[0])
    for _ in range(FAILURES + 1):
        declined = await _pay(api, fan, hold["id"], {"provider": "offline", "card_number": offline.DECLINED})
        assert declined.status_code == 200, declined.text
        assert (declined.json()["status"], declined.json()["failure_code"]) == ("failed", "card_declined")
    breaker = api.app.state.gateways.breaker(PaymentProvider.OFFLINE)
    assert (breaker.state, breaker.failures_in_a_row) == (BreakerState.CLOSED, 0)
    paid = await _pay(api, fan, hold["id"], {"provider": "offline", "card_number": offline.SUCCESS})
    assert paid.json()["status"] == "confirmed"


async def _age_pending_payments(session: AsyncSession) -> None:
    """As reconciliation finds them a few minutes on."""
    await session.execute(
        text("UPDATE payments SET updated_at = now() - interval '5 minutes' WHERE state = 'pending'")
    )
    await session.commit()


@pytest.fixture
async def job_gateways(
    settings: Settings, fake: FakeStripe, session: AsyncSession
) -> AsyncIterator[Gateways]:
    """What a reconciliation run builds: the providers, each with a breaker of the run's own
    (failing once opens it), Stripe's servers being the fake."""
    sessions = make_sessionmaker(session.bind)  # type: ignore[arg-type]
    job_settings = _breaker_settings(with_stripe(settings, fake), failures=1)
    async with Gateways(job_settings, sessions, breaker_metrics=False) as gateways:
        await gateways.aclose()
        gateways.by_provider[PaymentProvider.STRIPE] = StripeGateway(
            fake.api_key, http_client=fake.http_client
        )
        yield gateways


async def test_a_payment_whose_answer_was_lost_as_the_breaker_opened_is_settled_by_reconciliation(
    api: AsyncTestClient[Litestar],
    fake: FakeStripe,
    event: SmallEvent,
    session: AsyncSession,
    job_gateways: Gateways,
) -> None:
    """The failure that opens the breaker is a create whose answer was lost after Stripe made
    the intent; the payer pays it anyway. The webhook is refused while the API's breaker is
    open (Stripe would deliver it again later), and reconciliation, whose run judges Stripe
    for itself, confirms the order: the money ends as tickets."""
    fake.fail_next(3)
    assert (await _bought(api, event, event.seat_ids[0]))["status"] == "failed"
    fake.time_out_next(3, processed=True)
    pending = await _bought(api, event, event.seat_ids[1])
    assert pending["status"] == "pending"
    assert _stripe_breaker(api).state is BreakerState.OPEN
    (intent_id,) = fake.intents
    fake.confirm(intent_id, card=CARD_SUCCESS)
    (succeeded,) = fake.take_webhooks()
    seen = len(fake.requests)
    refused = await api.post("/webhooks/stripe", content=succeeded.payload, headers=succeeded.headers)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert len(fake.requests) == seen  # refused without asking Stripe

    await _age_pending_payments(session)
    sessions = make_sessionmaker(session.bind)  # type: ignore[arg-type]
    counts = await reconcile_with(sessions, job_gateways)
    assert (counts["confirmed"], counts["errors"], counts["paused"]) == (1, 0, 0), counts
    await session.rollback()
    row = (
        await session.execute(
            text(
                "SELECT p.state, h.state, o.state FROM payments p JOIN holds h ON h.id = p.hold_id JOIN orders o ON o.id = p.order_id WHERE p.id = :p"
            ),
            {"p": pending["payment_id"]},
        )
    ).one()
    assert tuple(row) == ("succeeded", "confirmed", "confirmed")


async def test_a_reconciliation_run_stops_calling_a_provider_that_keeps_failing(
    settings: Settings,
    fake: FakeStripe,
    event: SmallEvent,
    session: AsyncSession,
    job_gateways: Gateways,
) -> None:
    """Three payments wait on Stripe, which fails the run's first call: the other two are left
    for the next run, untouched and unasked, instead of each waiting out its own failure."""
    async with stripe_api_client(settings, fake) as api:  # the default five failures to open
        for seat in event.seat_ids[:3]:
            fake.time_out_next(3)  # never reached Stripe: nothing made, no reference known
            assert (await _bought(api, event, seat))["status"] == "pending"
    await _age_pending_payments(session)
    before = dict(
        tuple(row)  # type: ignore[misc]
        for row in await session.execute(text("SELECT id, updated_at FROM payments"))
    )
    sessions = make_sessionmaker(session.bind)  # type: ignore[arg-type]
    fake.fail_next(3)
    seen = len(fake.requests)
    counts = await reconcile_with(sessions, job_gateways)
    assert (counts["errors"], counts["paused"]) == (1, 2), counts
    assert len(fake.requests) == seen + 3  # one call (and the SDK's two retries), then none
    await session.rollback()
    after = dict(
        tuple(row)  # type: ignore[misc]
        for row in await session.execute(text("SELECT id, updated_at FROM payments WHERE state = 'pending'"))
    )
    assert after.keys() == before.keys()  # all still pending
    assert sum(after[p] != before[p] for p in before) == 1  # only the one asked went to the back
