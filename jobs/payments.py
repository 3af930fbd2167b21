"""Payment jobs: settle payments left pending, and pay recorded refunds back.

Both are safe to run twice and in parallel: settlement re-checks the payment under a row
lock, and every provider call carries the idempotency key of what it is for.

Each run calls the providers through breakers of its own (``booking.payments.breaker``):
once a provider has failed ``BOXOFFICE_PAYMENT_BREAKER_FAILURES`` times in a row, the run
makes no more calls to it, and what is left for it waits, unchanged, for the next run. So a
run during an outage costs a handful of timeouts rather than one per payment, and never
fails the job into RQ's retries: the periodic schedule is the back-off. Nothing is lost by
waiting: a pending payment stays pending (its hold kept in ``paying``) until a run reaches
the provider, whose answer settles it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking.logs import get_logger
from booking.payments import service as payments
from booking.payments.gateway import GatewayError, ProviderPaused
from booking.payments.models import PaymentProvider
from booking.payments.registry import Gateways
from booking.settings import get_settings
from jobs.db import job_sessions

log = get_logger("boxoffice.jobs.payments")
# The lines the checkout route writes for the same outcomes (a pending one stays quiet).
_SETTLED_EVENTS = {
    payments.Result.CONFIRMED: "order confirmed",
    payments.Result.FAILED: "payment failed",
    payments.Result.REFUND_REQUIRED: "paid after the hold's seats were gone: refunding",
}


async def reconcile_payments(limit: int = 100) -> dict[str, int]:
    """Every 30 s: ask the provider about payments pending past their hold's grace or for
    longer than a couple of minutes, and settle them; then cancel at the provider the failed
    payments their holds gave up on."""
    # A job runs on its own event loop: its provider connections are closed with it.
    async with job_sessions() as sessions, _gateways(sessions) as gateways:
        return await reconcile_with(sessions, gateways, limit)


async def reconcile_with(
    sessions: async_sessionmaker[AsyncSession], gateways: Gateways, limit: int = 100
) -> dict[str, int]:
    """One run of ``reconcile_payments`` with these sessions and gateways, whose breakers
    judge the providers for the run. Returns how many payments ended each way, with
    ``errors`` (asked in vain, sent to the back of the queue) and ``paused`` (left for the
    next run, untouched, once their provider's breaker opened)."""
    counts = {"confirmed": 0, "refund_required": 0, "failed": 0, "pending": 0, "errors": 0, "paused": 0}
    async with sessions() as session:
        due = await payments.due_for_reconciliation(session, limit=limit)
    paused: set[PaymentProvider] = set()
    for item in due:
        if item.provider in paused:
            counts["paused"] += 1
            continue
        try:
            settled = await payments.reconcile(sessions, gateways.guarded(item.provider), item)
        except ProviderPaused:
            _paused(paused, item.provider, "reconciliation")
            counts["paused"] += 1
            continue
        except GatewayError as error:
            # The provider is away: the payment stays pending and is asked about next round.
            log.warning(
                "payment provider unavailable while reconciling",
                payment_id=item.payment_id,
                hold_id=item.hold_id,
                error=str(error),
            )
            counts["errors"] += 1
            await payments.postpone(sessions, payment_id=item.payment_id)
            continue
        except Exception:
            # Whatever this one payment's trouble, the others must still be settled.
            log.exception("reconciling a payment failed", payment_id=item.payment_id, hold_id=item.hold_id)
            counts["errors"] += 1
            await payments.postpone(sessions, payment_id=item.payment_id)
            continue
        counts[settled.result.value] += 1
        if (event := _SETTLED_EVENTS.get(settled.result)) is not None:
            log.info(
                event,
                via="reconciliation",
                payment_id=settled.payment_id,
                hold_id=settled.hold_id,
                order_id=settled.order_id,
            )
    counts["closed"] = await _close_failed(sessions, gateways, limit)
    return counts


def _gateways(sessions: async_sessionmaker[AsyncSession]) -> Gateways:
    # The run's own breakers: not this process's verdict for a scrape to show.
    return Gateways(get_settings(), sessions, breaker_metrics=False)


def _paused(paused: set[PaymentProvider], provider: PaymentProvider, work: str) -> None:
    """Note that ``provider`` is paused for the rest of this run: one line, not one a call
    (the breaker logged the failure that paused it)."""
    paused.add(provider)
    log.warning(
        "payment provider failing: the rest of this run waits for the next", provider=provider, work=work
    )


async def _close_failed(sessions: async_sessionmaker[AsyncSession], gateways: Gateways, limit: int) -> int:
    # Failed payments whose hold gave up on them: cancelled at the provider, so a declined
    # intent cannot be completed later for a booking that no longer wants it.
    async with sessions() as session:
        due = await payments.failed_to_close(session, limit=limit)
    closed = 0
    paused: set[PaymentProvider] = set()
    for item in due:
        if item.provider in paused:
            continue
        try:
            await payments.close_failed(sessions, gateways.guarded(item.provider), item)
        except ProviderPaused:
            _paused(paused, item.provider, "closing failed payments")
            continue
        except Exception:
            log.exception("closing a failed payment at its provider failed", payment_id=item.payment_id)
            continue
        closed += 1
    return closed


async def make_refunds(limit: int = 100) -> dict[str, int]:
    """Every minute, and at once when a refund is recorded: pay pending refunds back, then
    ask the provider about refunds it accepted but had not paid out yet."""
    counts = {"succeeded": 0, "submitted": 0, "failed": 0, "errors": 0, "paused": 0}
    # A job runs on its own event loop: its provider connections are closed with it.
    async with job_sessions() as sessions, _gateways(sessions) as gateways:
        async with sessions() as session:
            due = await payments.pending_refunds(session, limit=limit)
            submitted = await payments.submitted_refunds(session, limit=limit)
        paused: set[PaymentProvider] = set()
        for item in due:
            if item.provider in paused:
                counts["paused"] += 1
                continue
            try:
                ok = await payments.make_refund(sessions, gateways.guarded(item.provider), item)
            except ProviderPaused:
                # Not an attempt against the refund: nothing was sent.
                _paused(paused, item.provider, "refunds")
                counts["paused"] += 1
                continue
            except Exception as error:
                # make_refund counted a provider error against the refund (failed after a
                # few, for on-call); anything else sends it to the back of the queue.
                log.warning("refund not paid back yet", refund_id=item.refund_id, error=str(error))
                counts["errors"] += 1
                await payments.postpone(sessions, refund_id=item.refund_id)
                continue
            counts["succeeded" if ok else "submitted"] += 1
        for waiting in submitted:
            if waiting.provider in paused:
                counts["paused"] += 1
                continue
            try:
                state = await payments.check_refund(sessions, gateways.guarded(waiting.provider), waiting)
            except ProviderPaused:
                _paused(paused, waiting.provider, "refunds")
                counts["paused"] += 1
                continue
            except Exception as error:
                log.warning("refund could not be checked", refund_id=waiting.refund_id, error=str(error))
                counts["errors"] += 1
                await payments.postpone(sessions, refund_id=waiting.refund_id)
                continue
            if state.value in counts:
                counts[state.value] += 1
    return counts
