"""A fake Stripe behind the real SDK: it replaces only the HTTP client the SDK sends through.

The official ``stripe`` package builds every request (form encoding, headers, idempotency
keys, its own retries) and parses every answer exactly as it does against Stripe; this module
answers those requests from an in-memory account that keeps PaymentIntents and Refunds.

What it reproduces, because our code depends on it:

- PaymentIntents: create (optionally confirmed on the server with a test PaymentMethod),
  retrieve, search by metadata; the payer's browser confirming with a test card is
  ``FakeStripe.confirm``.
- Idempotency: a POST whose ``Idempotency-Key`` was seen before is answered with the stored
  response (``Idempotent-Replayed: true``) when its path and parameters are the same, and with
  Stripe's 400 ``idempotency_error`` when they differ.
- Faults: the next N requests answer 500 (``fail_next``) or time out (``time_out_next``),
  optionally after the request was processed, which is the case that matters: the state
  changed and the answer was lost.
- Webhooks: ``payment_intent.*`` events signed with Stripe's scheme
  (``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``), kept until a test takes them, so
  it can deliver them late, twice or out of order.

Usage::

    fake = FakeStripe()
    gateway = StripeGateway(fake.api_key, http_client=fake.http_client)
    payment = await gateway.create(...)
    fake.confirm(payment.ref, card=CARD_DECLINED)
    for hook in reversed(fake.take_webhooks()):
        handle(hook.payload, hook.signature)
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from stripe import APIConnectionError, HTTPClient

API_VERSION = "2026-10-28.endive"
API_KEY = "sk_test_boxoffice_fake"
WEBHOOK_SECRET = "whsec_boxoffice_fake"

# Stripe's documented test cards (the payer types these into the browser) ...
CARD_SUCCESS = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_INSUFFICIENT_FUNDS = "4000000000009995"
CARD_AUTHENTICATION_REQUIRED = "4000002760003184"
# ... and its test PaymentMethods with the same behaviour, for a confirmation on the server.
PM_SUCCESS = "pm_card_visa"
PM_DECLINED = "pm_card_chargeDeclined"
PM_INSUFFICIENT_FUNDS = "pm_card_chargeDeclinedInsufficientFunds"
PM_AUTHENTICATION_REQUIRED = "pm_card_authenticationRequired"

_OUTCOME = {
    CARD_SUCCESS: "succeeded",
    CARD_DECLINED: "generic_decline",
    CARD_INSUFFICIENT_FUNDS: "insufficient_funds",
    CARD_AUTHENTICATION_REQUIRED: "requires_action",
    PM_SUCCESS: "succeeded",
    PM_DECLINED: "generic_decline",
    PM_INSUFFICIENT_FUNDS: "insufficient_funds",
    PM_AUTHENTICATION_REQUIRED: "requires_action",
}
_DECLINE_MESSAGE = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
}
_CONFIRMABLE = {"requires_payment_method", "requires_confirmation", "requires_action"}

Response = tuple[bytes, int, Mapping[str, str]]


def sign_stripe_payload(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` header Stripe sends with ``payload`` signed at ``timestamp``.

    Written from Stripe's description of the scheme rather than with the SDK's helper, so a
    test of our verification does not check the SDK against itself.
    """
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class FakeWebhook:
    """One delivery of one event. Stripe signs each delivery attempt anew; ``resigned``
    makes the signature of a later attempt."""

    event_id: str
    type: str
    payment_intent_id: str
    payload: bytes
    signature: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Stripe-Signature": self.signature}

    def resigned(self, timestamp: int) -> FakeWebhook:
        return FakeWebhook(
            self.event_id,
            self.type,
            self.payment_intent_id,
            self.payload,
            sign_stripe_payload(self.payload, self.secret, timestamp),
            self.secret,
        )


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    # What happened to it: "ok", "replayed", "500", "timeout", "timeout-processed", or the
    # HTTP status of an error answer.
    outcome: str


@dataclass
class _Fault:
    kind: str  # "500" or "timeout"
    processed: bool = False


@dataclass
class _Stored:
    method: str
    path: str
    params: dict[str, Any]
    body: bytes
    status: int


class FakeStripeError(Exception):
    """A test asked the fake for something Stripe would not allow (a confirmation of a
    settled intent, an unknown id, an unknown test card)."""


class FakeStripeHTTPClient(HTTPClient):
    """The SDK's HTTP-client boundary: requests go to ``FakeStripe.handle`` instead of the
    network. Back-off sleeps between the SDK's retries are recorded, not slept."""

    name = "boxoffice-fake-stripe"

    def __init__(self, stripe: FakeStripe) -> None:
        super().__init__()
        self._stripe = stripe
        self.sleeps: list[float] = []

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        body, status, response_headers = self._stripe.handle(method, url, headers or {}, post_data)
        return body.decode(), status, response_headers

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        if self._stripe.latency_s:
            await asyncio.sleep(self._stripe.latency_s)  # a slow network or a slow Stripe
        return self._stripe.handle(method, url, headers, post_data)

    def sleep_async(self, secs: float) -> Awaitable[None]:
        self.sleeps.append(secs)
        return asyncio.sleep(0)

    def close(self) -> None:
        return None

    async def close_async(self) -> None:
        return None


class FakeStripe:
    """An in-memory Stripe account in test mode. Not thread-safe; one per test."""

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        webhook_secret: str = WEBHOOK_SECRET,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.clock = clock
        # How long a new intent stays invisible to search (Stripe's search lags writes).
        self.search_lag_s = 0.0
        # How long every async request takes to be answered.
        self.latency_s = 0.0
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        # What a new refund's status is: "succeeded" at once, or "pending" as Stripe answers
        # for most payment methods, paid out (or failed) later by ``settle_refund``.
        self.refund_status = "succeeded"
        self.requests: list[RecordedRequest] = []
        self.webhooks: list[FakeWebhook] = []
        self.http_client = FakeStripeHTTPClient(self)
        self._searchable_at: dict[str, float] = {}
        self._stored: dict[str, _Stored] = {}
        self._faults: deque[_Fault] = deque()
        self._undelivered: list[FakeWebhook] = []
        self._ids = itertools.count(1)

    # -- what a test tells the fake --------------------------------------------------------

    def fail_next(self, n: int = 1) -> None:
        """The next ``n`` requests answer 500 without being processed."""
        self._faults.extend(_Fault("500") for _ in range(n))

    def time_out_next(self, n: int = 1, *, processed: bool = False) -> None:
        """The next ``n`` requests raise the SDK's connection error (what its HTTP clients
        raise on a timeout); with ``processed`` each was carried out before its answer was
        lost."""
        self._faults.extend(_Fault("timeout", processed) for _ in range(n))

    def confirm(self, intent_id: str, *, card: str = CARD_SUCCESS) -> dict[str, Any]:
        """What the payer's browser does with the client secret: confirm with a test card.
        Emits the matching webhook. Returns the intent as Stripe now has it.

        Raises:
            FakeStripeError: unknown intent or card, or an intent that is not confirmable.
        """
        intent = self._intent(intent_id)
        if card not in _OUTCOME:
            raise FakeStripeError(f"not a test card the fake knows: {card}")
        if intent["status"] not in _CONFIRMABLE:
            raise FakeStripeError(f"cannot confirm an intent that is {intent['status']}")
        self._attempt(intent, card)
        return copy.deepcopy(intent)

    def cancel(self, intent_id: str, *, reason: str = "abandoned") -> dict[str, Any]:
        """Cancel as the dashboard would. Raises FakeStripeError for a succeeded intent."""
        intent = self._intent(intent_id)
        if intent["status"] in ("succeeded", "canceled"):
            raise FakeStripeError(f"cannot cancel an intent that is {intent['status']}")
        intent.update(status="canceled", cancellation_reason=reason, canceled_at=self._now())
        self._emit("payment_intent.canceled", intent)
        return copy.deepcopy(intent)

    def settle_refund(
        self, refund_id: str, *, status: str = "succeeded", failure_reason: str | None = None
    ) -> None:
        """A pending refund paid out (``succeeded``) or not (``failed``, with the reason Stripe
        gives), with the webhook Stripe sends: ``refund.updated`` or ``refund.failed``."""
        refund = self.refunds[refund_id]
        refund.update(status=status, failure_reason=failure_reason if status == "failed" else None)
        self._emit("refund.failed" if status == "failed" else "refund.updated", refund)

    def take_webhooks(self) -> list[FakeWebhook]:
        """The deliveries made since the last call, oldest first; the fake forgets them (a
        test that wants to deliver one twice keeps it)."""
        taken, self._undelivered = self._undelivered, []
        return taken

    def sign(self, payload: bytes, timestamp: int | None = None, secret: str | None = None) -> str:
        return sign_stripe_payload(
            payload, secret or self.webhook_secret, self._now() if timestamp is None else timestamp
        )

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # -- the HTTP side ---------------------------------------------------------------------

    def handle(self, method: str, url: str, headers: Mapping[str, str], post_data: Any) -> Response:
        """Answer one SDK request as Stripe would. Raises the SDK's APIConnectionError for an
        injected timeout."""
        method = method.lower()
        parts = urlsplit(url)
        path = parts.path
        raw = parts.query if method != "post" else (post_data or "")
        if isinstance(raw, bytes):
            raw = raw.decode()
        params = _decode_form(raw)
        key = _header(headers, "Idempotency-Key")

        fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.kind == "500":
            self._record(method, path, params, key, "500")
            return _error(500, "api_error", "An unexpected error occurred (injected by the fake).")
        if fault is not None and not fault.processed:
            self._record(method, path, params, key, "timeout")
            raise _timeout()

        outcome, response = self._answer(method, path, params, key, headers)
        if fault is not None:
            self._record(method, path, params, key, "timeout-processed")
            raise _timeout()
        self._record(method, path, params, key, outcome)
        return response

    def _answer(
        self, method: str, path: str, params: dict[str, Any], key: str | None, headers: Mapping[str, str]
    ) -> tuple[str, Response]:
        if _header(headers, "Authorization") != f"Bearer {self.api_key}":
            return "401", _error(401, "invalid_request_error", "Invalid API Key provided.")
        if method == "post" and key:
            stored = self._stored.get(key)
            if stored is not None:
                if (stored.method, stored.path, stored.params) != (method, path, params):
                    return "400", _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters "
                        f"they were first used with. Try using a key other than '{key}' if you "
                        "meant to execute a different request.",
                    )
                return "replayed", _respond(stored.status, stored.body, replayed=True)
        status, body = self._route(method, path, params)
        if method == "post" and key:
            self._stored[key] = _Stored(method, path, params, body, status)
        return ("ok" if status < 300 else str(status)), _respond(status, body)

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, bytes]:
        try:
            if method == "post" and path == "/v1/payment_intents":
                return self._create_intent(params)
            if method == "get" and path == "/v1/payment_intents/search":
                return self._search_intents(params)
            match = re.fullmatch(r"/v1/payment_intents/([^/]+)", path)
            if method == "get" and match:
                return 200, _json(self._intent(match.group(1)))
            match = re.fullmatch(r"/v1/payment_intents/([^/]+)/cancel", path)
            if method == "post" and match:
                intent = self._intent(match.group(1))
                if intent["status"] in ("succeeded", "canceled", "processing"):
                    raise _Invalid(
                        f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}.",
                        code="payment_intent_unexpected_state",
                    )
                return 200, _json(
                    self.cancel(intent["id"], reason=str(params.get("cancellation_reason", "abandoned")))
                )
            if method == "post" and path == "/v1/refunds":
                return self._create_refund(params)
            match = re.fullmatch(r"/v1/refunds/([^/]+)", path)
            if method == "get" and match:
                if match.group(1) not in self.refunds:
                    raise _Missing("refund", match.group(1))
                return 200, _json(self.refunds[match.group(1)])
        except _Missing as missing:
            return _error_body(
                404,
                "invalid_request_error",
                f"No such {missing.kind}: '{missing.ref}'",
                code="resource_missing",
                param=missing.kind,
            )
        except _Invalid as invalid:
            return _error_body(400, "invalid_request_error", str(invalid), code=invalid.code)
        return _error_body(
            404, "invalid_request_error", f"Unrecognized request URL ({method.upper()}: {path})."
        )

    def _create_intent(self, params: dict[str, Any]) -> tuple[int, bytes]:
        amount = _int(params, "amount")
        currency = str(params.get("currency", ""))
        if amount < 1 or not re.fullmatch(r"[a-zA-Z]{3}", currency):
            raise _Invalid("amount must be a positive integer and currency a three-letter code")
        metadata = params.get("metadata") or {}
        if not isinstance(metadata, dict) or any(
            len(k) > 40 or not isinstance(v, str) or len(v) > 500 for k, v in metadata.items()
        ):
            raise _Invalid("metadata keys are at most 40 characters and values at most 500")
        automatic = params.get("automatic_payment_methods") or {}
        confirm = params.get("confirm") == "true"
        payment_method = params.get("payment_method")
        if confirm and not payment_method:
            raise _Invalid("confirm=true needs a payment_method", code="payment_intent_unexpected_state")
        if (
            confirm
            and automatic.get("enabled") == "true"
            and automatic.get("allow_redirects") != "never"
            and not params.get("return_url")
        ):
            raise _Invalid(
                "This PaymentIntent is configured to accept payment methods that may redirect; "
                "provide a return_url or set automatic_payment_methods[allow_redirects]=never."
            )
        if payment_method and payment_method not in _OUTCOME:
            raise _Missing("payment_method", str(payment_method))
        intent_id = self._new_id("pi")
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "automatic_payment_methods": {
                "enabled": automatic.get("enabled") == "true",
                "allow_redirects": automatic.get("allow_redirects", "always"),
            }
            if automatic
            else None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic_async",
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
            "confirmation_method": "automatic",
            "created": self._now(),
            "currency": currency.lower(),
            "customer": None,
            "description": None,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": dict(metadata),
            "next_action": None,
            "payment_method": None,
            "payment_method_types": ["card"],
            "status": "requires_payment_method",
        }
        self.intents[intent_id] = intent
        self._searchable_at[intent_id] = self.clock() + self.search_lag_s
        if confirm:
            self._attempt(intent, str(payment_method))
            error = intent["last_payment_error"]
            if error is not None:
                body = {"error": {**error, "payment_intent": copy.deepcopy(intent)}}
                return 402, json.dumps(body).encode()
        return 200, _json(intent)

    def _search_intents(self, params: dict[str, Any]) -> tuple[int, bytes]:
        clauses = _parse_query(str(params.get("query", "")))
        limit = _int(params, "limit") if "limit" in params else 10
        now = self.clock()
        found = [
            intent
            for intent in self.intents.values()
            if self._searchable_at[intent["id"]] <= now and all(_matches(intent, c) for c in clauses)
        ]
        found.sort(key=lambda i: i["created"], reverse=True)
        body = {
            "object": "search_result",
            "url": "/v1/payment_intents/search",
            "data": found[:limit],
            "has_more": len(found) > limit,
            "next_page": None,
        }
        return 200, json.dumps(body).encode()

    def _create_refund(self, params: dict[str, Any]) -> tuple[int, bytes]:
        intent = self._intent(str(params.get("payment_intent", "")))
        if intent["status"] != "succeeded":
            raise _Invalid(
                f"PaymentIntent {intent['id']} has no successful charge to refund; it is {intent['status']}.",
                code="payment_intent_unexpected_state",
            )
        refunded = sum(
            r["amount"]
            for r in self.refunds.values()
            if r["payment_intent"] == intent["id"] and r["status"] in ("succeeded", "pending")
        )
        left = intent["amount_received"] - refunded
        if left <= 0:
            raise _Invalid(
                f"Charge {intent['latest_charge']} has already been refunded.", code="charge_already_refunded"
            )
        amount = _int(params, "amount") if "amount" in params else left
        if amount < 1 or amount > left:
            raise _Invalid(
                f"Refund amount ({amount}) is greater than the unrefunded amount ({left}).",
                code="amount_too_large",
            )
        refund = {
            "id": self._new_id("re"),
            "object": "refund",
            "amount": amount,
            "charge": intent["latest_charge"],
            "created": self._now(),
            "currency": intent["currency"],
            "failure_reason": None,
            "metadata": dict(params.get("metadata") or {}),
            "payment_intent": intent["id"],
            "reason": params.get("reason"),
            "status": self.refund_status,
        }
        self.refunds[refund["id"]] = refund
        return 200, _json(refund)

    # -- state ---------------------------------------------------------------------------

    def _attempt(self, intent: dict[str, Any], card: str) -> None:
        outcome = _OUTCOME[card]
        method = {"id": self._new_id("pm"), "object": "payment_method", "type": "card"}
        intent["payment_method"] = method["id"]
        if outcome == "succeeded":
            intent.update(
                status="succeeded",
                amount_received=intent["amount"],
                latest_charge=self._new_id("ch"),
                last_payment_error=None,
                next_action=None,
            )
            self._emit("payment_intent.succeeded", intent)
        elif outcome == "requires_action":
            intent.update(
                status="requires_action",
                next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}},
            )
            self._emit("payment_intent.requires_action", intent)
        else:
            intent.update(
                status="requires_payment_method",
                latest_charge=self._new_id("ch"),
                next_action=None,
                payment_method=None,
                last_payment_error={
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": outcome,
                    "message": _DECLINE_MESSAGE[outcome],
                    "doc_url": "https://stripe.com/docs/error-codes/card-declined",
                    "payment_method": method,
                },
            )
            self._emit("payment_intent.payment_failed", intent)

    def _emit(self, event_type: str, intent: dict[str, Any]) -> None:
        created = self._now()
        event_id = self._new_id("evt")
        event = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": created,
            "data": {"object": copy.deepcopy(intent)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        payload = json.dumps(event, indent=2).encode()
        hook = FakeWebhook(
            event_id,
            event_type,
            intent["id"],
            payload,
            sign_stripe_payload(payload, self.webhook_secret, created),
            self.webhook_secret,
        )
        self.webhooks.append(hook)
        self._undelivered.append(hook)

    def _intent(self, intent_id: str) -> dict[str, Any]:
        intent = self.intents.get(intent_id)
        if intent is None:
            raise _Missing("payment_intent", intent_id)
        return intent

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}{secrets.token_hex(4)}"

    def _now(self) -> int:
        return int(self.clock())

    def _record(self, method: str, path: str, params: dict[str, Any], key: str | None, outcome: str) -> None:
        self.requests.append(RecordedRequest(method, path, params, key, outcome))


class _Missing(FakeStripeError):
    def __init__(self, kind: str, ref: str) -> None:
        super().__init__(f"No such {kind}: '{ref}'")
        self.kind, self.ref = kind, ref


class _Invalid(Exception):
    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


_CLAUSE = re.compile(r"\s*(\w+)(?:\['((?:[^'\\]|\\.)*)'\])?:'((?:[^'\\]|\\.)*)'\s*")


def _parse_query(query: str) -> list[tuple[str, str | None, str]]:
    """Stripe's search language, as far as we use it: ``field:'v'`` and
    ``metadata['k']:'v'`` clauses joined by AND."""
    clauses = []
    for part in re.split(r"\s+AND\s+", query.strip()):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise _Invalid(
                f"The query is not valid search syntax: {query!r}", code="parameter_invalid_string"
            )
        field_name, sub, value = match.groups()
        clauses.append((field_name, _unescape(sub) if sub is not None else None, _unescape(value)))
    return clauses


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _matches(intent: dict[str, Any], clause: tuple[str, str | None, str]) -> bool:
    field_name, sub, value = clause
    if field_name == "metadata" and sub is not None:
        return bool(intent["metadata"].get(sub) == value)
    return str(intent.get(field_name)) == value


def _decode_form(raw: str) -> dict[str, Any]:
    """``a[b][c]=v`` pairs into nested dicts (values stay strings, as Stripe receives them)."""
    result: dict[str, Any] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        keys = re.findall(r"[^\[\]]+", name) or [name]
        target = result
        for part in keys[:-1]:
            target = target.setdefault(part, {})
        target[keys[-1]] = value
    return result


def _int(params: dict[str, Any], name: str) -> int:
    try:
        return int(params[name])
    except (KeyError, TypeError, ValueError):
        raise _Invalid(f"Missing or invalid integer: {name}", code="parameter_missing") from None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def _respond(status: int, body: bytes, *, replayed: bool = False) -> Response:
    headers = {
        "Content-Type": "application/json",
        "Request-Id": f"req_fake{secrets.token_hex(6)}",
        "Stripe-Version": API_VERSION,
    }
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return body, status, httpx.Headers(headers)


def _error_body(
    status: int, kind: str, message: str, *, code: str | None = None, param: str | None = None
) -> tuple[int, bytes]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    return status, json.dumps({"error": error}).encode()


def _error(status: int, kind: str, message: str) -> Response:
    return _respond(*_error_body(status, kind, message))


def _timeout() -> APIConnectionError:
    # What the SDK's httpx client raises for httpx.TimeoutException: retryable. (The SDK
    # leaves this constructor unannotated.)
    return APIConnectionError(  # type: ignore[no-untyped-call]
        "Unexpected error communicating with Stripe.\n\n(Network error: A ReadTimeout was raised)",
        should_retry=True,
    )


__all__ = [
    "CARD_AUTHENTICATION_REQUIRED",
    "CARD_DECLINED",
    "CARD_INSUFFICIENT_FUNDS",
    "CARD_SUCCESS",
    "PM_AUTHENTICATION_REQUIRED",
    "PM_DECLINED",
    "PM_INSUFFICIENT_FUNDS",
    "PM_SUCCESS",
    "FakeStripe",
    "FakeStripeError",
    "FakeStripeHTTPClient",
    "FakeWebhook",
    "RecordedRequest",
    "sign_stripe_payload",
]
