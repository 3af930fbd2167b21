"""The payment provider's breaker on its own: what counts against the provider, the window,
the one trial after the cool-down. Provider calls are stand-in coroutines here, except where
the fake Stripe shows which of its answers count (tests/faults/test_payment_breaker.py runs
the breaker inside checkout and the jobs)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from booking.payments.breaker import TRIAL_RETRY_AFTER_S, BreakerState, GuardedGateway, ProviderBreaker
from booking.payments.gateway import GatewayError, GatewayTimeout, ProviderPaused
from booking.payments.stripe_gateway import StripeGateway
from tests.fakes.stripe import FakeStripe

LONG_S = 600.0  # a cool-down no test outlasts
SHORT_S = 0.05  # one a test waits out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(
    failures: int = 3, *, window_s: float = 60.0, cooldown_s: float = LONG_S, **kw: object
) -> ProviderBreaker:
    return ProviderBreaker(
        "test", failures=failures, window_s=window_s, cooldown_s=cooldown_s, export_metrics=False, **kw
    )  # type: ignore[arg-type]


async def answer() -> str:
    return "answered"


async def fail(error: BaseException) -> None:
    raise error


async def call(b: ProviderBreaker, error: BaseException | None = None) -> None:
    """One admitted call that answers, or raises ``error``."""
    with b.admit() as admission:
        if error is None:
            await admission.call(answer)
            return
        with pytest.raises(type(error)):
            await admission.call(fail, error)


async def wait_out_cooldown(b: ProviderBreaker) -> None:
    await asyncio.sleep((b.paused_for() or 0.0) + SHORT_S / 2)
    assert b.paused_for() is None


async def test_failures_in_a_row_open_it_and_then_nothing_is_called() -> None:
    b = breaker(3)
    for n in range(2):
        await call(b, GatewayTimeout("no answer"))
        assert (b.state, b.failures_in_a_row) == (BreakerState.CLOSED, n + 1)
    await call(b, GatewayError("Stripe answered 502", status=502))
    assert b.state is BreakerState.OPEN
    with pytest.raises(ProviderPaused) as paused:
        b.admit()
    assert 0 < paused.value.retry_after <= LONG_S
    assert not paused.value.provider_fault  # a refusal of ours, not the provider's failure
    assert b.paused_for() is not None


async def test_an_answer_in_between_starts_the_count_again() -> None:
    b = breaker(2)
    await call(b, GatewayTimeout("no answer"))
    await call(b)
    await call(b, GatewayTimeout("no answer"))
    assert (b.state, b.failures_in_a_row) == (BreakerState.CLOSED, 1)


@pytest.mark.parametrize("status", [400, 402, 404, 409])
async def test_a_refused_request_is_an_answer_not_a_failure(status: int) -> None:
    b = breaker(1)
    await call(b, GatewayError(f"Stripe answered {status}", status=status))
    assert (b.state, b.failures_in_a_row) == (BreakerState.CLOSED, 0)


async def test_a_rate_limit_counts_against_the_provider() -> None:
    b = breaker(1)
    await call(b, GatewayError("Stripe answered 429", status=429))
    assert b.state is BreakerState.OPEN


async def test_an_error_that_is_not_the_providers_is_no_verdict() -> None:
    b = breaker(2)
    await call(b, GatewayTimeout("no answer"))
    await call(b, ValueError("a bug of ours"))
    await call(b, asyncio.CancelledError())
    assert (b.state, b.failures_in_a_row) == (BreakerState.CLOSED, 1)


async def test_failures_spread_wider_than_the_window_do_not_open_it() -> None:
    clock = Clock()
    b = breaker(3, window_s=10.0, clock=clock)
    await call(b, GatewayTimeout("no answer"))
    clock.now += 6
    await call(b, GatewayTimeout("no answer"))
    clock.now += 6  # the run began 12 s ago: it is forgotten, and this one starts a new run
    await call(b, GatewayTimeout("no answer"))
    assert (b.state, b.failures_in_a_row) == (BreakerState.CLOSED, 1)
    clock.now += 4
    await call(b, GatewayTimeout("no answer"))
    clock.now += 4
    await call(b, GatewayTimeout("no answer"))  # three within 8 s
    assert b.state is BreakerState.OPEN


async def test_after_the_cool_down_exactly_one_trial_goes_and_its_success_closes_it() -> None:
    b = breaker(1, cooldown_s=SHORT_S)
    await call(b, GatewayTimeout("no answer"))
    await wait_out_cooldown(b)
    with b.admit() as trial:
        assert trial.trial
        assert b.state is BreakerState.HALF_OPEN
        for _ in range(3):
            with pytest.raises(ProviderPaused) as refused:
                b.admit()
            assert refused.value.retry_after == TRIAL_RETRY_AFTER_S
        assert await trial.call(answer) == "answered"
    assert b.state is BreakerState.CLOSED
    with b.admit() as admission:
        assert not admission.trial


async def test_a_failed_trial_opens_it_for_another_cool_down() -> None:
    b = breaker(1, cooldown_s=SHORT_S)
    await call(b, GatewayTimeout("no answer"))
    await wait_out_cooldown(b)
    await call(b, GatewayError("Stripe answered 503", status=503))
    assert b.state is BreakerState.OPEN
    with pytest.raises(ProviderPaused):
        b.admit()


async def test_a_trial_that_never_called_leaves_the_trial_to_the_next_caller() -> None:
    b = breaker(1, cooldown_s=SHORT_S)
    await call(b, GatewayTimeout("no answer"))
    await wait_out_cooldown(b)
    with b.admit() as trial:
        assert trial.trial  # and then the hold turned out to be expired: no call made
    assert b.state is BreakerState.HALF_OPEN
    assert b.paused_for() is None
    await call(b, asyncio.CancelledError())  # admitted as the trial, cancelled mid-call
    with b.admit() as trial:
        assert trial.trial
        await trial.call(answer)
    assert b.state is BreakerState.CLOSED


async def test_a_late_answer_from_before_it_opened_does_not_close_it() -> None:
    b = breaker(1)
    slow = b.admit()
    await call(b, GatewayTimeout("no answer"))
    assert b.state is BreakerState.OPEN
    with slow:
        await slow.call(answer)
    assert b.state is BreakerState.OPEN


async def test_its_state_is_a_gauge_and_its_openings_a_counter() -> None:
    def sample(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"provider": "gauged"})

    b = ProviderBreaker("gauged", failures=1, window_s=60, cooldown_s=SHORT_S)
    opened = sample("boxoffice_payment_breaker_opened_total") or 0.0
    assert sample("boxoffice_payment_breaker_state") == 0
    await call(b, GatewayTimeout("no answer"))
    assert sample("boxoffice_payment_breaker_state") == 2
    assert sample("boxoffice_payment_breaker_opened_total") == opened + 1
    await wait_out_cooldown(b)
    with b.admit() as trial:
        assert sample("boxoffice_payment_breaker_state") == 1
        await trial.call(answer)
    assert sample("boxoffice_payment_breaker_state") == 0


async def test_through_stripe_only_5xx_and_silence_count_never_a_refused_request() -> None:
    """The gateway's errors carry Stripe's status: a 400 (a request Stripe refuses) is an
    answer, 500s and timeouts are failures; while open, the fake sees no request at all."""
    fake = FakeStripe()
    b = breaker(2)
    gateway = GuardedGateway(StripeGateway(fake.api_key, http_client=fake.http_client), b)
    with pytest.raises(GatewayError) as refused:
        await gateway.create(idempotency_key="k-0", amount_minor=0, currency="EUR", method={}, metadata={})
    assert (refused.value.status, refused.value.provider_fault) == (400, False)
    assert b.failures_in_a_row == 0
    fake.fail_next(3)  # the first try and both SDK retries
    with pytest.raises(GatewayError):
        await gateway.find("k-1")
    fake.time_out_next(3)
    with pytest.raises(GatewayTimeout):
        await gateway.retrieve("pi_nothing", hold_overdue=False)
    assert b.state is BreakerState.OPEN
    seen = len(fake.requests)
    with pytest.raises(ProviderPaused):
        await gateway.create(idempotency_key="k-2", amount_minor=100, currency="EUR", method={}, metadata={})
    with pytest.raises(ProviderPaused):
        await gateway.refund(ref="pi_x", amount_minor=100, currency="EUR", idempotency_key="r-1")
    assert len(fake.requests) == seen
