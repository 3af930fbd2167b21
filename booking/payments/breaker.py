"""A circuit breaker per payment provider: after repeated provider failures, stop calling it
for a while instead of making every fan wait for a timeout.

The state machine is purgatory's (``purgatory.domain.model.Context``): *closed* (calls go
through, failures in a row counted), *open* (no call is made for the cool-down), then
*half-open* (a call may try; its success closes the breaker, its failure opens it again).
Two rules are added here, because checkout needs them and purgatory leaves them out:

- **A window.** Purgatory counts failures in a row, however far apart. Here a run of
  failures counts only while it fits in ``window`` seconds: a run that started earlier is
  forgotten when the next failure comes, and counting starts again from that one.
- **One trial.** Purgatory's half-open state lets every caller through. Here exactly one
  admission is the trial; everyone else is refused (``ProviderPaused``, a short retry) until
  the trial has a verdict. An admission that ends without one (the hold had expired, the
  request was cancelled) frees the trial for the next caller, leaving the state half-open.

What counts against the provider is ``GatewayError.provider_fault``: no answer, a 5xx, a 429.
A decline is an answer (the card's, not the provider's health), and so is any other 4xx.
Exceptions that are not the gateway's (a cancelled request, a bug) are no verdict at all.

**Per process, by choice.** Purgatory can keep its state in Redis so that every API process
shares one verdict. That is not used: the verdict would then cost a Redis round trip on every
checkout (and a lock for the single trial), and would be lost exactly when Redis is unwell,
which the checkout path must survive (docs/architecture.md §5). A process's own verdict needs
nothing outside it and fails safe: a process that has seen no failures keeps calling. The
price is that each of N processes meets its own ``failures`` before it opens, and each sends
its own trial: N times a handful of calls per outage, which the provider's idempotency keys
make harmless.

Only calls the caller makes *through an admission* are judged; a call made without one (an
on-call command's explicit reconciliation) is not held back. Everything here runs on one
event loop without awaiting between a check and its change, so no lock is needed; the state
holds no loop objects, so it outlives the loop that made it.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from purgatory.domain.model import CLOSED, HALF_OPENED, Context, OpenedState

from booking import metrics
from booking.logs import get_logger
from booking.payments.gateway import (
    Gateway,
    GatewayError,
    GatewayPayment,
    GatewayRefund,
    ProviderPaused,
)
from booking.payments.models import PaymentProvider
from booking.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")

log = get_logger("boxoffice.payments.breaker")

# While the trial call is out, others are told to come back this soon: a trial lasts one
# provider call (a fraction of a second when the provider is back).
TRIAL_RETRY_AFTER_S = 1.0


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    # One trial call is allowed (or out); everyone else waits for its verdict.
    HALF_OPEN = "half_open"
    OPEN = "open"


# The gauge's value for each state (booking.metrics.PAYMENT_BREAKER_STATE).
GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def counts_against(error: BaseException) -> bool:
    """Whether ``error``, raised by a provider call, says the provider is unwell."""
    return isinstance(error, GatewayError) and error.provider_fault


class ProviderBreaker:
    """One provider's breaker in this process. ``failures`` in a row within ``window_s``
    open it; it stays open ``cooldown_s``; then one trial call decides.

    ``export_metrics`` makes it report its state in ``boxoffice_payment_breaker_state`` (and
    its openings in ``boxoffice_payment_breaker_opened_total``): on for the breaker a
    process lives with (the API's), off for one that lives a job run.
    """

    def __init__(
        self,
        provider: str,
        *,
        failures: int,
        window_s: float,
        cooldown_s: float,
        export_metrics: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or window_s <= 0 or cooldown_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and a positive window and cool-down")
        self.provider = provider
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._context = Context(provider, threshold=failures, ttl=cooldown_s)
        self._clock = clock
        # When the current run of failures began (our clock), while there is one.
        self._run_started: float | None = None
        self._trial_out = False
        self._export = export_metrics
        self._shown: BreakerState | None = None
        self._show()

    @classmethod
    def from_settings(
        cls, provider: PaymentProvider | str, settings: Settings, *, export_metrics: bool = True
    ) -> ProviderBreaker:
        return cls(
            str(provider),
            failures=settings.payment_breaker_failures,
            window_s=settings.payment_breaker_window_seconds,
            cooldown_s=settings.payment_breaker_cooldown_seconds,
            export_metrics=export_metrics,
        )

    # -- what callers ask -------------------------------------------------------------------

    @property
    def failures(self) -> int:
        return self._context.threshold

    @property
    def state(self) -> BreakerState:
        if self._context.state == CLOSED:
            return BreakerState.CLOSED
        if self._context.state == HALF_OPENED:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def failures_in_a_row(self) -> int:
        """Provider failures counted towards opening (closed only)."""
        if self.state is not BreakerState.CLOSED:
            return 0
        return self._context.failure_count or 0

    def paused_for(self) -> float | None:
        """Seconds until a call may be admitted again, or None when one may be now."""
        if self._context.state == CLOSED:
            return None
        if self._trial_out:
            return TRIAL_RETRY_AFTER_S
        if self._context.state == HALF_OPENED:
            return None
        remaining = (self._context.opened_at or 0.0) + self.cooldown_s - time.time()
        return remaining if remaining > 0 else None

    def admit(self) -> Admission:
        """Let one call through: a ``with`` block whose ``call`` makes it and records its
        verdict. Closed: always. After the cool-down: the first caller, as the trial.

        Raises:
            ProviderPaused: open and cooling down, or the trial is out; ``retry_after`` says
                when to come back.
        """
        if self._context.state == CLOSED:
            return Admission(self, trial=False)
        if self._trial_out:
            raise ProviderPaused(self.provider, TRIAL_RETRY_AFTER_S)
        try:
            # Open past its cool-down becomes half-open here; before it, purgatory refuses.
            self._context.handle_new_request()
        except OpenedState as opened:
            remaining = opened.opened_at + self.cooldown_s - time.time()
            raise ProviderPaused(self.provider, max(remaining, 0.0)) from None
        finally:
            self._context.messages.clear()
        self._trial_out = True
        self._show()
        return Admission(self, trial=True)

    # -- verdicts ---------------------------------------------------------------------------

    def _answered(self, admission: Admission) -> None:
        if admission.trial:
            self._trial_out = False
        elif self._context.state != CLOSED:
            # A call admitted before the breaker opened, answering late: the trial decides.
            return
        before = self.state
        self._context.handle_end_request()
        self._context.messages.clear()
        self._run_started = None
        if before is not BreakerState.CLOSED:
            log.info("payment provider answers again: calls resume", provider=self.provider)
        self._show()

    def _failed(self, admission: Admission, error: BaseException) -> None:
        if admission.trial:
            self._trial_out = False
        elif self._context.state != CLOSED:
            return
        now = self._clock()
        if self._context.state == CLOSED:
            if self._run_started is not None and now - self._run_started > self.window_s:
                # The run began longer ago than the window: it no longer counts.
                self._context.handle_end_request()
                self._run_started = None
            if self._run_started is None:
                self._run_started = now
        self._context.handle_exception(error)
        self._context.messages.clear()
        if self.state is BreakerState.OPEN:
            self._run_started = None
            log.warning(
                "payment provider failing: calls paused",
                provider=self.provider,
                trial=admission.trial,
                cooldown_s=self.cooldown_s,
                error=str(error),
            )
            if self._export:
                metrics.PAYMENT_BREAKER_OPENED.labels(self.provider).inc()
        self._show()

    def _no_verdict(self, admission: Admission) -> None:
        if admission.trial:
            # The trial never reached the provider: the next caller tries instead.
            self._trial_out = False
            self._show()

    def _show(self) -> None:
        state = self.state
        if self._export and state is not self._shown:
            metrics.PAYMENT_BREAKER_STATE.labels(self.provider).set(GAUGE_VALUE[state])
        self._shown = state


class Admission:
    """Leave to make one provider call (``ProviderBreaker.admit``). Its ``call`` makes it
    and records the verdict; leaving the ``with`` block without a call records none."""

    __slots__ = ("_breaker", "_done", "trial")

    def __init__(self, breaker: ProviderBreaker, *, trial: bool) -> None:
        self._breaker = breaker
        self.trial = trial
        self._done = False

    def __enter__(self) -> Admission:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done:
            self._done = True
            self._breaker._no_verdict(self)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)``, its outcome judged: a provider fault counts
        against the provider, an answer (a decline or a 4xx included) for it, any other
        exception not at all. Once per admission."""
        if self._done:
            raise RuntimeError("an admission makes one call")
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            self._done = True
            if counts_against(error):
                self._breaker._failed(self, error)
            elif isinstance(error, GatewayError) and not isinstance(error, ProviderPaused):
                # The provider answered, refusing the request (a 4xx): it is up.
                self._breaker._answered(self)
            else:
                self._breaker._no_verdict(self)
            raise
        self._done = True
        self._breaker._answered(self)
        return result


def retry_after_seconds(paused: ProviderPaused) -> int:
    """A ``Retry-After`` for ``paused``: whole seconds, at least one."""
    return max(1, math.ceil(paused.retry_after))


class GuardedGateway:
    """``inner`` with every call admitted by ``breaker``: while the provider is paused each
    raises ``ProviderPaused`` at once, without a request. For callers that make whole calls
    (jobs, webhooks); checkout admits around its own steps instead."""

    def __init__(self, inner: Gateway, breaker: ProviderBreaker) -> None:
        self.inner = inner
        self.breaker = breaker
        self.provider = inner.provider

    async def create(
        self,
        *,
        idempotency_key: str,
        amount_minor: int,
        currency: str,
        method: dict[str, Any],
        metadata: dict[str, str],
    ) -> GatewayPayment:
        with self.breaker.admit() as admission:
            return await admission.call(
                self.inner.create,
                idempotency_key=idempotency_key,
                amount_minor=amount_minor,
                currency=currency,
                method=method,
                metadata=metadata,
            )

    async def find(self, idempotency_key: str) -> GatewayPayment | None:
        with self.breaker.admit() as admission:
            return await admission.call(self.inner.find, idempotency_key)

    async def retrieve(self, ref: str, *, hold_overdue: bool) -> GatewayPayment:
        with self.breaker.admit() as admission:
            return await admission.call(self.inner.retrieve, ref, hold_overdue=hold_overdue)

    async def cancel(self, ref: str) -> GatewayPayment:
        with self.breaker.admit() as admission:
            return await admission.call(self.inner.cancel, ref)

    async def refund(
        self, *, ref: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        with self.breaker.admit() as admission:
            return await admission.call(
                self.inner.refund,
                ref=ref,
                amount_minor=amount_minor,
                currency=currency,
                idempotency_key=idempotency_key,
            )

    async def retrieve_refund(self, ref: str) -> GatewayRefund:
        with self.breaker.admit() as admission:
            return await admission.call(self.inner.retrieve_refund, ref)


__all__ = [
    "Admission",
    "BreakerState",
    "GuardedGateway",
    "ProviderBreaker",
    "ProviderPaused",
    "counts_against",
    "retry_after_seconds",
]
