"""Stripe webhooks: prove a delivery came from Stripe, then read the little we need from it.

A webhook is only a trigger. Its body is a snapshot that may be stale, repeated or out of
order, so we keep just the event id (to deduplicate), its type, the PaymentIntent it is about
and when Stripe made it; whoever handles it fetches the PaymentIntent again and settles what
the provider says now.

Framework-free: the caller passes the raw request body (bytes, exactly as received: any
re-encoding breaks the signature) and the ``Stripe-Signature`` header.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any

from stripe import SignatureVerificationError, WebhookSignature

from booking.errors import WebhookPayloadMalformed, WebhookSignatureInvalid, WebhookTimestampStale

# Stripe's own default: long enough for a slow delivery, short enough to make a captured
# delivery useless to replay.
DEFAULT_TOLERANCE_S = 300


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    # The PaymentIntent the event is about (``data.object`` itself, or the intent a charge or
    # refund belongs to); None for events about nothing we sell.
    payment_intent_id: str | None
    created: dt.datetime
    # The refund the event is about (``data.object`` is a refund), else None.
    refund_id: str | None = None


def verify_stripe_event(
    payload: bytes,
    signature_header: str | None,
    secret: str,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> StripeEvent:
    """Check the ``Stripe-Signature`` header against the raw body and return the event.

    The signature is checked first, so nothing about an unauthenticated body is believed, not
    even its shape. Any ``v1`` signature in the header may match (Stripe sends one per active
    secret while a secret is being rolled). ``now`` (Unix seconds) replaces the clock in tests.

    Raises:
        WebhookSignatureInvalid: no header, an unreadable header, or no ``v1`` signature that
            matches ``secret`` and the body.
        WebhookTimestampStale: correctly signed, but more than ``tolerance_s`` seconds ago.
        WebhookPayloadMalformed: correctly signed, but not a JSON event object.
    """
    if not secret.strip():
        # A missing secret in configuration must not turn into "accept everything".
        raise WebhookSignatureInvalid("No webhook signing secret is configured.")
    try:
        # tolerance=None: the SDK then only checks the signature; the age is checked below so
        # a stale delivery gets its own error instead of a generic mismatch.
        WebhookSignature.verify_header(payload, signature_header, secret, tolerance=None)
    except SignatureVerificationError as error:
        raise WebhookSignatureInvalid(str(error)) from None
    except UnicodeDecodeError:
        raise WebhookSignatureInvalid("The body is not UTF-8, so it cannot carry a signature.") from None
    signed_at = _timestamp(signature_header or "")
    current = time.time() if now is None else now
    if tolerance_s and signed_at < current - tolerance_s:
        raise WebhookTimestampStale(
            f"Signed {int(current - signed_at)} s ago; deliveries older than {tolerance_s} s are refused."
        )
    return _event(payload)


def _timestamp(header: str) -> int:
    # verify_header has already parsed this header successfully, so the "t" item exists.
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            return int(value)
    raise WebhookSignatureInvalid("The signature header has no timestamp.")


def _event(payload: bytes) -> StripeEvent:
    try:
        body = json.loads(payload)
    except ValueError:
        raise WebhookPayloadMalformed("The body is not JSON.") from None
    if not isinstance(body, dict) or body.get("object") != "event":
        raise WebhookPayloadMalformed("The body is not a Stripe event object.")
    event_id, event_type, created = body.get("id"), body.get("type"), body.get("created")
    data = body.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if (
        not isinstance(event_id, str)
        or not isinstance(event_type, str)
        or isinstance(created, bool)
        or not isinstance(created, int)
        or not isinstance(obj, dict)
    ):
        raise WebhookPayloadMalformed("The event lacks an id, a type, a creation time or data.object.")
    return StripeEvent(
        id=event_id,
        type=event_type,
        payment_intent_id=_payment_intent_of(obj),
        created=dt.datetime.fromtimestamp(created, tz=dt.UTC),
        refund_id=obj["id"] if obj.get("object") == "refund" and isinstance(obj.get("id"), str) else None,
    )


def _payment_intent_of(obj: dict[str, Any]) -> str | None:
    if obj.get("object") == "payment_intent":
        ref = obj.get("id")
    else:
        # Charges, refunds and disputes name their intent by id (or carry it expanded).
        ref = obj.get("payment_intent")
        if isinstance(ref, dict):
            ref = ref.get("id")
    return ref if isinstance(ref, str) and ref else None


__all__ = ["DEFAULT_TOLERANCE_S", "StripeEvent", "verify_stripe_event"]
