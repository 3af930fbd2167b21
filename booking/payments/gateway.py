"""What Boxoffice needs from a payment provider, and nothing more.

Every call carries an idempotency key derived from our own ids (the hold id is in every
payment's key), so a call repeated after a timeout or a crash never charges or refunds twice:
the provider replays its first answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from booking.payments.models import PaymentProvider


class GatewayStatus(enum.StrEnum):
    # Money may still move: the payer has to act (3-D Secure, a wallet) or the provider is
    # still processing. Only a later answer (webhook, reconciliation) settles it.
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class GatewayPayment:
    ref: str
    status: GatewayStatus
    amount_minor: int
    currency: str
    # Handed to the payer's browser (Stripe.js confirms the payment with it); never stored.
    client_secret: str | None = None
    failure_code: str | None = None
    # Our payment's id, as the provider keeps it with the payment (metadata): how a webhook
    # about a payment whose reference we have not recorded yet still finds it.
    payment_id: str | None = None


@dataclass(frozen=True)
class GatewayRefund:
    """A refund as the provider has it. ``PENDING``: accepted, the money not back yet (Stripe
    pays most refunds out later, and may still fail one); only ``SUCCEEDED`` is done."""

    ref: str
    status: GatewayStatus
    failure_code: str | None = None


class GatewayError(Exception):
    """The provider answered with an error that is not about the payer's card (a 5xx, a
    malformed request). Safe to retry with the same idempotency key.

    ``status`` is the provider's HTTP status when it answered with one."""

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def provider_fault(self) -> bool:
        """Whether this says the provider is unwell (no answer, a 5xx, or a 429 asking us to
        slow down), rather than that our request was refused (any other 4xx): only the
        former counts against it in the breaker (``booking.payments.breaker``)."""
        return self.status is None or self.status >= 500 or self.status == 429


class GatewayTimeout(GatewayError):
    """No answer in time: the charge may or may not have happened. Never assume either;
    ask again with the same idempotency key, or let reconciliation ask."""


class ProviderPaused(GatewayError):
    """The call was not made: the provider failed repeatedly and calls to it are paused
    (``booking.payments.breaker``) for ``retry_after`` more seconds. Nothing reached it, so
    nothing can have been charged or refunded by this call."""

    def __init__(self, provider: str, retry_after: float) -> None:
        super().__init__(f"calls to {provider} are paused for {retry_after:.0f} s after repeated failures")
        self.provider = provider
        self.retry_after = retry_after

    @property
    def provider_fault(self) -> bool:
        # Not a new failure of the provider: nothing was sent to it.
        return False


class Gateway(Protocol):
    provider: PaymentProvider

    async def create(
        self,
        *,
        idempotency_key: str,
        amount_minor: int,
        currency: str,
        method: dict[str, Any],
        metadata: dict[str, str],
    ) -> GatewayPayment:
        """Create (and, where the provider charges at once, attempt) a payment.

        Raises:
            GatewayTimeout, GatewayError.
        """
        ...

    async def find(self, idempotency_key: str) -> GatewayPayment | None:
        """The payment a ``create`` with this key made, if it made one: how a payment whose
        create timed out (no reference known) is settled later.

        Raises:
            GatewayTimeout, GatewayError.
        """
        ...

    async def retrieve(self, ref: str, *, hold_overdue: bool) -> GatewayPayment:
        """The payment as the provider sees it now. ``hold_overdue`` says the hold's payment
        grace has passed (only the offline test provider uses it, to play a late success).

        Raises:
            GatewayTimeout, GatewayError.
        """
        ...

    async def cancel(self, ref: str) -> GatewayPayment:
        """Give up a payment the payer abandoned, so it can no longer take money. A payment
        that already succeeded (or is being processed) is not cancelled: its current state is
        returned instead, for the caller to settle.

        Raises:
            GatewayTimeout, GatewayError.
        """
        ...

    async def refund(
        self, *, ref: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        """Give a succeeded payment's money back. A payment already refunded in full at the
        provider (by someone in its dashboard, say) answers ``SUCCEEDED`` with failure code
        ``already_refunded``: the money is back with the payer either way.

        Raises:
            GatewayTimeout, GatewayError.
        """
        ...

    async def retrieve_refund(self, ref: str) -> GatewayRefund:
        """The refund ``ref`` as the provider has it now.

        Raises:
            GatewayTimeout, GatewayError.
        """
        ...
