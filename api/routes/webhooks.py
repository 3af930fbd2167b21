"""Provider webhooks: the payment's outcome, told to us by the provider."""

from __future__ import annotations

import json
import uuid
from typing import Any

from litestar import Request, Response, post
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.idempotency import render_error
from booking.errors import PaymentNotRecordedYet, PaymentProviderUnavailable, PaymentProviderUnreachable
from booking.idempotency import StoredResponse, run_once
from booking.payments import service as payments
from booking.payments.gateway import GatewayError, GatewayPayment
from booking.payments.models import Payment, PaymentProvider
from booking.payments.registry import Gateways
from booking.payments.webhooks import verify_stripe_event

HANDLED = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.processing",
        "payment_intent.requires_action",
    }
)
# A refund paid out, or failed after Stripe had accepted it.
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})


@post(
    "/webhooks/stripe",
    status_code=200,
    tags=["webhooks"],
    summary="Stripe webhook",
    description=(
        "Verified against `BOXOFFICE_STRIPE_WEBHOOK_SECRET` on the raw body. Each event is handled "
        "once (by its id); the payment is fetched from Stripe again rather than trusted from the "
        "body, so repeated, late and out-of-order deliveries are harmless. While Stripe cannot be "
        "asked, a delivery is refused with 503 and Retry-After, for Stripe to deliver it again."
    ),
    include_in_schema=True,
)
async def stripe_webhook(request: Request[Any, Any, Any]) -> Response[bytes]:
    settings = request.app.state.settings
    gateways: Gateways = request.app.state.gateways
    if settings.stripe_webhook_secret is None:
        raise PaymentProviderUnavailable("Stripe webhooks are not configured here.")
    payload = await request.body()
    event = verify_stripe_event(
        payload, request.headers.get("stripe-signature"), settings.stripe_webhook_secret.get_secret_value()
    )
    sessions = request.app.state.sessionmaker
    # Through the process's breaker: while Stripe is failing the delivery is refused at once
    # (a paused call raises GatewayError too) instead of holding a request slot for its timeouts.
    gateway = gateways.guarded(PaymentProvider.STRIPE)

    # Ask Stripe first, outside any transaction of ours: the body says what happened when it
    # was sent, Stripe says what is true now.
    try:
        answer = (
            await gateway.retrieve(event.payment_intent_id, hold_overdue=False)
            if event.type in HANDLED and event.payment_intent_id
            else None
        )
        refund = (
            await gateway.retrieve_refund(event.refund_id)
            if event.type in REFUND_EVENTS and event.refund_id
            else None
        )
    except GatewayError as error:
        # Stripe could not tell us now: the delivery is refused (503), so Stripe sends it
        # again later, and reconciliation settles the payment meanwhile. Nothing was stored.
        raise PaymentProviderUnreachable(f"Stripe could not be asked about the event: {error}") from error

    async def handle(session: AsyncSession) -> StoredResponse:
        outcome = "ignored"
        if answer is not None:
            payment_id = await _our_payment(session, answer)
            if payment_id is not None:
                outcome = (await payments.settle(session, payment_id, answer)).result.value
            elif answer.payment_id is not None:
                # One of ours by its metadata, not committed here yet (checkout is still
                # recording it): left unacknowledged, so Stripe delivers it again, instead of
                # being stored as handled and never looked at again.
                raise PaymentNotRecordedYet()
            # Otherwise the intent is not ours (another application on the same account).
        if refund is not None:
            ours = await payments.refund_by_provider_ref(session, PaymentProvider.STRIPE, refund.ref)
            if ours is not None:
                written = await payments.apply_refund_answer(session, ours.refund_id, refund)
                outcome = f"refund {written.value}" if written is not None else "refund unchanged"
            # A refund whose reference we have not recorded (its create's answer was lost)
            # is found by the refund job replaying the create with its key, then polled.
        body = json.dumps({"received": True, "event": event.id, "outcome": outcome}).encode()
        return StoredResponse(200, body, {"content-type": "application/json"})

    result = await run_once(
        sessions,
        scope="webhook:stripe",
        key=event.id,
        method="POST",
        path="/webhooks/stripe",
        body=event.id.encode(),
        operation=handle,
        render_error=render_error,
    )
    stored = result.response
    headers = {k: v for k, v in stored.headers.items() if k != "content-type"}
    return Response(
        stored.body,
        status_code=stored.status,
        media_type=stored.headers.get("content-type", "application/json"),
        headers=headers,
    )


async def _our_payment(session: AsyncSession, answer: GatewayPayment) -> uuid.UUID | None:
    """Our Stripe payment the intent is, by its reference, or else by the payment id in its
    metadata (a payment whose create timed out has no reference recorded yet; settling it
    records one)."""
    by_ref = await session.scalar(
        select(Payment.id).where(
            Payment.provider == PaymentProvider.STRIPE, Payment.provider_ref == answer.ref
        )
    )
    if by_ref is not None or answer.payment_id is None:
        return by_ref
    try:
        named = uuid.UUID(answer.payment_id)
    except ValueError:
        return None
    return await session.scalar(
        select(Payment.id).where(
            Payment.id == named,
            Payment.provider == PaymentProvider.STRIPE,
            or_(Payment.provider_ref.is_(None), Payment.provider_ref == answer.ref),
        )
    )
