"""Payments and refunds: every captured amount ends as an order or a refund."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from booking.catalog.models import CURRENCY_CHECK
from booking.db import Base, now_default, state_enum, uuid_pk


class PaymentProvider(enum.StrEnum):
    STRIPE = "stripe"
    OFFLINE = "offline"
    CASH = "cash"
    CARD_PRESENT = "card_present"


# A pending payment is asked about again after this long even if its hold is not overdue
# (a create that timed out, a webhook that never came).
RECONCILE_AFTER = dt.timedelta(minutes=2)


class PaymentState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RefundState(enum.StrEnum):
    """``pending``: recorded, not yet accepted by the provider (the refund job asks it);
    ``submitted``: accepted, the money not back yet; ``succeeded``: paid back; ``failed``:
    refused or given up after repeated errors: on-call looks at it and retries it."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        CheckConstraint(CURRENCY_CHECK, name="currency_iso"),
        UniqueConstraint("provider", "provider_ref"),
        # A hold has at most one payment that may still take or has taken money.
        Index(
            "uq_payments_live_per_hold",
            "hold_id",
            unique=True,
            postgresql_where=text("state IN ('pending', 'succeeded')"),
        ),
        Index("ix_payments_state_updated", "state", "updated_at"),
        # Failed payments whose provider-side payment is still open: the closing job's list.
        Index(
            "ix_payments_failed_open",
            "updated_at",
            postgresql_where=text(
                "state = 'failed' AND provider_ref IS NOT NULL AND provider_closed_at IS NULL"
            ),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    hold_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("holds.id"))
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"), index=True)
    provider: Mapped[PaymentProvider] = mapped_column(state_enum(PaymentProvider, "provider"))
    provider_ref: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[PaymentState] = mapped_column(
        state_enum(PaymentState, "state"), server_default=PaymentState.PENDING.value
    )
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    failure_code: Mapped[str | None] = mapped_column(String(120))
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = now_default()
    updated_at: Mapped[dt.datetime] = now_default()
    # When the provider was told to close a failed payment for good, so it can take no money
    # later (a declined Stripe intent stays open for another card until cancelled).
    provider_closed_at: Mapped[dt.datetime | None]


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint(CURRENCY_CHECK, name="currency_iso"),
        UniqueConstraint("payment_id", "idempotency_key"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"), index=True)
    # Names why this refund exists (e.g. "late-payment:<hold>"), so a retried job finds it.
    idempotency_key: Mapped[str] = mapped_column(String(255))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[RefundState] = mapped_column(
        state_enum(RefundState, "state"), server_default=RefundState.PENDING.value
    )
    reason: Mapped[str] = mapped_column(Text, server_default="")
    provider_ref: Mapped[str | None] = mapped_column(String(255))
    # Provider errors met paying it back, and the last one: past a few it is failed, for
    # on-call, instead of being retried for ever unseen.
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # How often on-call retried it after it failed: each retry is a new request to the
    # provider (the same idempotency key would replay the failed one).
    retries: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[dt.datetime] = now_default()
    updated_at: Mapped[dt.datetime] = now_default()


class OfflinePayment(Base):
    """The offline test provider's own memory, as a real provider keeps one on its side: what
    each idempotency key created, so a repeated create (after a timeout) replays it."""

    __tablename__ = "offline_gateway_payments"

    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    ref: Mapped[str] = mapped_column(String(64), unique=True)
    behaviour: Mapped[str] = mapped_column(String(20))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime] = now_default()
