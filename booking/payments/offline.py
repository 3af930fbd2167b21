"""The offline test provider: card numbers decide what happens, nothing leaves the machine.

For local runs, demos and tests. It behaves like a real provider where it matters: a
timeout that charged anyway, a success reported only later, idempotency keys replayed.
Its memory is a table of its own (``offline_gateway_payments``), written in its own
transactions as if it lived elsewhere, so a repeated create replays and any process can
answer ``retrieve`` and ``find``.

Test cards (any expiry, any CVC):

======================  ==============================================================
4242 4242 4242 4242     succeeds at once
4000 0000 0000 0002     declined (``card_declined``)
4000 0000 0000 9995     declined (``insufficient_funds``)
4000 0000 0000 0119     the gateway times out; the charge went through, and
                        reconciliation later finds it succeeded
4000 0000 0000 3063     pending at checkout; succeeds only after the hold's payment grace
                        has run out (a late success: kept if the seats are free, else
                        refunded)
======================  ==============================================================
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking.db import each_statement_commits
from booking.errors import InvalidRequest
from booking.payments.gateway import (
    GatewayError,
    GatewayPayment,
    GatewayRefund,
    GatewayStatus,
    GatewayTimeout,
)
from booking.payments.models import OfflinePayment, PaymentProvider
from booking.sqltext import HotStatement

SUCCESS = "4242424242424242"
DECLINED = "4000000000000002"
INSUFFICIENT_FUNDS = "4000000000009995"
TIMEOUT = "4000000000000119"
LATE_SUCCESS = "4000000000003063"

_BEHAVIOUR = {
    SUCCESS: "ok",
    DECLINED: "declined",
    INSUFFICIENT_FUNDS: "nofunds",
    TIMEOUT: "timeout",
    LATE_SUCCESS: "late",
}
_FAILURE = {"declined": "card_declined", "nofunds": "insufficient_funds"}


def card_number(method: dict[str, Any]) -> str:
    """Raises: InvalidRequest (no card, or not one of the test cards)."""
    number = "".join(str(method.get("card_number", "")).split())
    if number not in _BEHAVIOUR:
        raise InvalidRequest(
            "The offline provider takes test cards only: 4242 4242 4242 4242 (success), "
            "4000 0000 0000 0002 (declined), 4000 0000 0000 9995 (insufficient funds), "
            "4000 0000 0000 0119 (gateway timeout), 4000 0000 0000 3063 (late success)."
        )
    return number


# No conflict target: the key and the ref (made from the key) are both unique, and with a
# target only its own index is the arbiter. Two creates of one key at once would then meet on
# the ref's index, and the second would fail instead of waiting for the first and replaying it.
_CREATE = HotStatement(
    "INSERT INTO offline_gateway_payments AS p (idempotency_key, ref, behaviour, amount_minor, currency)"
    " VALUES (:key, :ref, :behaviour, :amount, :currency)"
    " ON CONFLICT DO NOTHING"
    " RETURNING p.ref, p.behaviour, p.amount_minor, p.currency"
)


class OfflineGateway:
    provider = PaymentProvider.OFFLINE

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def create(
        self,
        *,
        idempotency_key: str,
        amount_minor: int,
        currency: str,
        method: dict[str, Any],
        metadata: dict[str, str],
    ) -> GatewayPayment:
        behaviour = _BEHAVIOUR[card_number(method)]
        ref = "off_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        async with self.sessions() as session:
            # One round trip for a new key; a replayed one (the insert did nothing) reads the
            # row stored for it, which the insert waited for if it was being written. Each is
            # a whole transaction by itself.
            await each_statement_commits(session)
            created = await _CREATE.rows(
                session,
                {
                    "key": idempotency_key,
                    "ref": ref,
                    "behaviour": behaviour,
                    "amount": amount_minor,
                    "currency": currency,
                },
            )
            stored = None if created else await session.get(OfflinePayment, idempotency_key)
            await session.commit()
        first = bool(created)
        if stored is not None:
            row = stored
        elif created:
            found_ref, found_behaviour, found_amount, found_currency = created[0]
            row = OfflinePayment(
                idempotency_key=idempotency_key,
                ref=found_ref,
                behaviour=found_behaviour,
                amount_minor=found_amount,
                currency=found_currency,
            )
        else:  # pragma: no cover - only two keys whose refs collide (96 bits of a hash) get here
            raise GatewayError("the offline gateway lost a payment it had recorded", status=500)
        if row.behaviour == "timeout" and first:
            # The charge is recorded, the answer is lost; a retry with the key gets it.
            raise GatewayTimeout("the offline gateway did not answer (test card 0119)")
        return _state(row, hold_overdue=False)

    async def find(self, idempotency_key: str) -> GatewayPayment | None:
        async with self.sessions() as session:
            row = await session.get(OfflinePayment, idempotency_key)
        return _state(row, hold_overdue=False) if row is not None else None

    async def retrieve(self, ref: str, *, hold_overdue: bool) -> GatewayPayment:
        async with self.sessions() as session:
            row = await session.scalar(select(OfflinePayment).where(OfflinePayment.ref == ref))
        if row is None:
            raise GatewayError(f"no such offline payment: {ref}", status=404)
        return _state(row, hold_overdue=hold_overdue)

    async def cancel(self, ref: str) -> GatewayPayment:
        # Offline payments never wait on a payer: a pending one is settled by the provider's
        # own schedule (a late success), so there is nothing to abandon.
        return await self.retrieve(ref, hold_overdue=True)

    async def refund(
        self, *, ref: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> GatewayRefund:
        # Deterministic per key: a repeated refund replays rather than paying out twice.
        return GatewayRefund(
            ref="offre_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24],
            status=GatewayStatus.SUCCEEDED,
        )

    async def retrieve_refund(self, ref: str) -> GatewayRefund:
        # Offline refunds are paid back at once.
        return GatewayRefund(ref=ref, status=GatewayStatus.SUCCEEDED)


def _state(row: OfflinePayment, *, hold_overdue: bool) -> GatewayPayment:
    if row.behaviour in _FAILURE:
        return GatewayPayment(
            row.ref,
            GatewayStatus.FAILED,
            row.amount_minor,
            row.currency,
            failure_code=_FAILURE[row.behaviour],
        )
    if row.behaviour == "late" and not hold_overdue:
        return GatewayPayment(row.ref, GatewayStatus.PENDING, row.amount_minor, row.currency)
    return GatewayPayment(row.ref, GatewayStatus.SUCCEEDED, row.amount_minor, row.currency)
