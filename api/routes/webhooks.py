"""Provider webhooks: the payment's outcome, told to us by the provider."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response, post
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.idempotency import render_error
from booking.errors import PaymentProviderUnavailable
from booking.idempotency import StoredResponse, run_once
from booking.payments import service as payments
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


@post(
    "/webhooks/stripe",
    status_code=200,
    tags=["webhooks"],
    summary="Stripe webhook",
    description=(
        "Verified against `BOXOFFICE_STRIPE_WEBHOOK_SECRET` on the raw body. Each event is handled "
        "once (by its id); the payment is fetched from Stripe again rather than trusted from the "
        "body, so repeated, late and out-of-order deliveries are harmless."
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
    gateway = gateways.get(PaymentProvider.STRIPE)

    # Ask Stripe first, outside any transaction of ours: the body says what happened when it
    # was sent, Stripe says what is true now.
    answer = (
        await gateway.retrieve(event.payment_intent_id, hold_overdue=False)
        if event.type in HANDLED and event.payment_intent_id
        else None
    )

    async def handle(session: AsyncSession) -> StoredResponse:
        outcome = "ignored"
        if answer is not None:
            payment_id = await session.scalar(
                select(Payment.id).where(
                    Payment.provider == PaymentProvider.STRIPE, Payment.provider_ref == answer.ref
                )
            )
            if payment_id is not None:
                outcome = (await payments.settle(session, payment_id, answer)).result.value
            # An intent we hold no reference for yet (its create timed out, or checkout has
            # not recorded it yet) is settled by reconciliation, which finds it by its key.
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
    return Response(stored.body, status_code=stored.status, media_type="application/json")
