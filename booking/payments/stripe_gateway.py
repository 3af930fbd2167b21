"""Stripe as a payment provider: one PaymentIntent per payment, fetched again to settle.

Invariants:

- Every state-changing call carries our idempotency key, and the SDK's own retries (network
  errors, timeouts, 409s and 5xx answers) resend it, so a retry replays Stripe's first answer
  instead of creating a second intent or a second refund.
- The key is also stored in the intent's metadata (``idempotency_key``), so a create whose
  answer was lost can be found again by ``find``.
- Nothing here decides that money moved on the strength of a webhook or a client's word:
  statuses come from the PaymentIntent as Stripe reports it.

Checkout normally creates the intent unconfirmed and hands its client secret to the payer's
browser (Stripe.js confirms it there). A ``method`` naming a ``payment_method`` (an id that
Stripe.js created) confirms on the server at once instead; a card decline then comes back as
a FAILED payment rather than an error.
"""

from __future__ import annotations

from typing import Any, NoReturn

from stripe import (
    APIConnectionError,
    CardError,
    HTTPClient,
    HTTPXClient,
    IdempotencyError,
    InvalidRequestError,
    PaymentIntent,
    Refund,
    StripeClient,
    StripeError,
)
from stripe.params import PaymentIntentCreateParams

from booking.payments.gateway import (
    GatewayError,
    GatewayPayment,
    GatewayRefund,
    GatewayStatus,
    GatewayTimeout,
)
from booking.payments.models import PaymentProvider

# One attempt's budget. With the retries below a call gives up after about
# (1 + MAX_NETWORK_RETRIES) * TIMEOUT_S plus the SDK's back-off (0.5 s, then 1 s, ...).
TIMEOUT_S = 10.0
MAX_NETWORK_RETRIES = 2

METADATA_KEY = "idempotency_key"

# Stripe's "you were declined, we will not say why": the code alone says as much.
_GENERIC_DECLINE = "generic_decline"


class StripeGateway:
    """The ``Gateway`` protocol over Stripe's PaymentIntents and Refunds (async SDK calls).

    ``http_client`` replaces the SDK's HTTP client (tests pass a fake Stripe here); by default
    an httpx client with a ``timeout_s`` budget per attempt. Its connection pool belongs to
    the event loop that first uses it: code that runs each job on a new loop builds a
    gateway per job and closes it with ``aclose``.
    """

    provider = PaymentProvider.STRIPE

    def __init__(
        self,
        secret_key: str,
        *,
        http_client: HTTPClient | None = None,
        api_base: str | None = None,
        timeout_s: float = TIMEOUT_S,
        max_network_retries: int = MAX_NETWORK_RETRIES,
    ) -> None:
        if not secret_key:
            raise ValueError("A Stripe secret key is required.")
        self._http = http_client if http_client is not None else HTTPXClient(timeout=timeout_s)
        self._client = StripeClient(
            secret_key,
            http_client=self._http,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections this gateway opened."""
        # The SDK leaves this method unannotated; it returns nothing.
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create(
        self,
        *,
        idempotency_key: str,
        amount_minor: int,
        currency: str,
        method: dict[str, Any],
        metadata: dict[str, str],
    ) -> GatewayPayment:
        """Create the payment's PaymentIntent (confirming it at once when ``method`` names a
        ``payment_method``). Repeating the call with the same key and arguments answers with
        the same intent. ``method`` may also carry ``return_url`` for a server-side
        confirmation that may redirect the payer; without one, redirecting methods are not
        offered.

        Raises:
            GatewayTimeout: no answer after the SDK's retries; the intent may exist (``find``).
            GatewayError: any other refusal, including this key reused with other arguments.
        """
        params: PaymentIntentCreateParams = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "metadata": {**metadata, METADATA_KEY: idempotency_key},
            "automatic_payment_methods": {"enabled": True},
        }
        payment_method = method.get("payment_method")
        if payment_method:
            params["payment_method"] = str(payment_method)
            params["confirm"] = True
            return_url = method.get("return_url")
            if return_url:
                params["return_url"] = str(return_url)
            else:
                # Confirming on the server with nowhere to send the payer back to: Stripe
                # then refuses methods that need a redirect instead of leaving them hanging.
                params["automatic_payment_methods"] = {"enabled": True, "allow_redirects": "never"}
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except CardError as error:
            # A server-side confirmation was declined: Stripe still created the intent and
            # sends it with the error; that intent is the answer.
            declined = _intent_of_card_error(error)
            if declined is None:
                _raise(error)
            return _payment(declined)
        except StripeError as error:
            _raise(error)
        return _payment(intent)

    async def find(self, idempotency_key: str) -> GatewayPayment | None:
        """The intent a ``create`` with this key made, looked up by its metadata.

        Stripe's search is eventually consistent: an intent is usually searchable within a
        minute of its creation, rarely an hour during an incident. None therefore means "not
        seen yet"; it proves the create never happened only well after that. An intent made
        without server-side confirmation cannot have taken money, since its client secret was
        never handed out.

        Raises:
            GatewayTimeout, GatewayError.
        """
        query = f"metadata['{METADATA_KEY}']:'{_quoted(idempotency_key)}'"
        try:
            found = await self._client.v1.payment_intents.search_async(params={"query": query, "limit": 10})
        except StripeError as error:
            _raise(error)
        # A search term matches exactly, but the key decides, not the search engine.
        matches = [i for i in found.data if _key_of(i) == idempotency_key]
        if not matches:
            return None
        # Keys are used for one create only, so there is one; the oldest is the one a replay
        # of the create would answer with.
        return _payment(min(matches, key=lambda i: i.created))

    async def retrieve(self, ref: str, *, hold_overdue: bool) -> GatewayPayment:
        """The intent's status as Stripe reports it now (``hold_overdue`` plays no part).

        Raises:
            GatewayTimeout, GatewayError (also for a ref Stripe does not know).
        """
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(ref)
        except StripeError as error:
            _raise(error)
        return _payment(intent)

    async def cancel(self, ref: str) -> GatewayPayment:
        """Cancel an intent the payer abandoned. Stripe refuses to cancel one that succeeded
        or is processing; then its current state is returned for settling.

        Raises:
            GatewayTimeout, GatewayError.
        """
        try:
            intent = await self._client.v1.payment_intents.cancel_async(
                ref, params={"cancellation_reason": "abandoned"}
            )
        except InvalidRequestError:
            return await self.retrieve(ref, hold_overdue=True)
        except StripeError as error:
            _raise(error)
        return _payment(intent)

    async def refund(
        self, *, ref: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        """Refund ``amount_minor`` of the intent ``ref`` (in the intent's own currency). The
        same key replays the first refund instead of paying out twice.

        A ``pending`` refund is only accepted: Stripe pays it out later and may still fail it
        (``refund.updated`` / ``refund.failed`` webhooks, or ``retrieve_refund``). An intent
        whose charge is already refunded in full answers ``SUCCEEDED`` / ``already_refunded``.

        Raises:
            GatewayTimeout, GatewayError (also for an intent that has not succeeded, or an
            amount larger than what is left to refund).
        """
        try:
            refund = await self._client.v1.refunds.create_async(
                params={"payment_intent": ref, "amount": amount_minor},
                options={"idempotency_key": idempotency_key},
            )
        except InvalidRequestError as error:
            if error.code == "charge_already_refunded":
                return GatewayRefund(ref="", status=GatewayStatus.SUCCEEDED, failure_code="already_refunded")
            _raise(error)
        except StripeError as error:
            _raise(error)
        return _refund(refund)

    async def retrieve_refund(self, ref: str) -> GatewayRefund:
        """Raises: GatewayTimeout, GatewayError (also for an unknown refund)."""
        try:
            refund = await self._client.v1.refunds.retrieve_async(ref)
        except StripeError as error:
            _raise(error)
        return _refund(refund)


def _refund(refund: Refund) -> GatewayRefund:
    status = refund.status or "pending"
    if status == "succeeded":
        return GatewayRefund(ref=refund.id, status=GatewayStatus.SUCCEEDED)
    if status in ("failed", "canceled"):
        return GatewayRefund(
            ref=refund.id, status=GatewayStatus.FAILED, failure_code=refund.failure_reason or status
        )
    return GatewayRefund(ref=refund.id, status=GatewayStatus.PENDING)  # pending, requires_action


def _payment(intent: PaymentIntent) -> GatewayPayment:
    status, failure_code = _status(intent)
    return GatewayPayment(
        ref=intent.id,
        status=status,
        amount_minor=intent.amount,
        currency=intent.currency.upper(),
        client_secret=intent.client_secret,
        failure_code=failure_code,
        payment_id=_metadata(intent, "payment_id"),
    )


def _status(intent: PaymentIntent) -> tuple[GatewayStatus, str | None]:
    if intent.status == "succeeded":
        return GatewayStatus.SUCCEEDED, None
    if intent.status == "canceled":
        return GatewayStatus.FAILED, intent.cancellation_reason or "canceled"
    error = intent.last_payment_error
    if intent.status == "requires_payment_method" and error is not None:
        # Stripe puts a failed attempt's intent back to requires_payment_method. The decline
        # code is the more telling one ("insufficient_funds") unless it is the generic one.
        code = error.code or "payment_failed"
        decline = error.decline_code
        if decline and decline != _GENERIC_DECLINE:
            code = decline
        return GatewayStatus.FAILED, code
    # requires_payment_method (nothing tried yet), requires_confirmation, requires_action
    # (3-D Secure), processing, requires_capture: money may still move.
    return GatewayStatus.PENDING, None


def _metadata(intent: PaymentIntent, name: str) -> str | None:
    # Stripe objects are not dicts: no .get, but item access and ``in`` work.
    metadata = intent.metadata
    return str(metadata[name]) if metadata is not None and name in metadata else None


def _key_of(intent: PaymentIntent) -> str | None:
    return _metadata(intent, METADATA_KEY)


def _intent_of_card_error(error: CardError) -> PaymentIntent | None:
    body = error.json_body
    data = body.get("error") if isinstance(body, dict) else None
    intent = data.get("payment_intent") if isinstance(data, dict) else None
    if not isinstance(intent, dict) or not isinstance(intent.get("id"), str):
        return None
    return PaymentIntent.construct_from(intent, key=None)


def _quoted(value: str) -> str:
    # Stripe's search language ends a string at a quote; a backslash escapes one.
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _raise(error: StripeError) -> NoReturn:
    if isinstance(error, APIConnectionError):
        raise GatewayTimeout(f"Stripe did not answer: {error.user_message}") from error
    if isinstance(error, IdempotencyError):
        raise GatewayError(
            f"Stripe refused a reused idempotency key (a different request was made with it): {error}",
            status=error.http_status,
        ) from error
    status = error.http_status
    raise GatewayError(
        f"Stripe answered {status or 'an error'}: {error.user_message}", status=status
    ) from error


__all__ = ["MAX_NETWORK_RETRIES", "METADATA_KEY", "TIMEOUT_S", "StripeGateway"]
