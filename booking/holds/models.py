"""Holds: a fan's (or a box-office terminal's) short claim on some units of one event."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from booking.catalog.models import CURRENCY_CHECK
from booking.db import Base, now_default, state_enum, uuid_pk


class HoldState(enum.StrEnum):
    ACTIVE = "active"
    PAYING = "paying"
    CONFIRMED = "confirmed"
    RELEASED = "released"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


# A hold in one of these still has its units: by state, whatever its deadline says.
LIVE_STATES = frozenset({HoldState.ACTIVE, HoldState.PAYING, HoldState.FAILED})

MAX_RENEWALS = 2


class Hold(Base):
    """Owned by exactly one fan or one staff key. ``expires_at`` mirrors its units'
    ``held_until``; the units' column is the authority when claiming."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint("num_nonnulls(fan_id, staff_key_id) = 1", name="one_owner"),
        CheckConstraint(f"renewals BETWEEN 0 AND {MAX_RENEWALS}", name="renewals_capped"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("total_minor >= 0", name="total_not_negative"),
        CheckConstraint(CURRENCY_CHECK, name="currency_iso"),
        Index("ix_holds_event_state", "event_id", "state"),
        Index("ix_holds_fan_event", "fan_id", "event_id"),
        # The sweeper's (and reconciliation's) way to the live holds whose deadline passed,
        # oldest first, without reading the finished ones.
        Index(
            "ix_holds_live_expires_at",
            "expires_at",
            postgresql_where=text("state IN ('active', 'paying', 'failed')"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id"))
    fan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("fans.id"))
    staff_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_keys.id"))
    state: Mapped[HoldState] = mapped_column(
        state_enum(HoldState, "state"), server_default=HoldState.ACTIVE.value
    )
    quantity: Mapped[int] = mapped_column(Integer)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    renewals: Mapped[int] = mapped_column(Integer, server_default="0")
    # The per-fan cap the hold was granted under (none for staff): a payment that succeeds
    # after the hold stopped counting toward it is checked against it again.
    ticket_cap: Mapped[int | None] = mapped_column(SmallInteger)
    created_at: Mapped[dt.datetime] = now_default()
    expires_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]


class HoldItem(Base):
    """The price snapshot: what each unit cost when it was held, whatever the tier says later."""

    __tablename__ = "hold_items"
    __table_args__ = (
        CheckConstraint("price_minor >= 0", name="price_not_negative"),
        CheckConstraint(CURRENCY_CHECK, name="currency_iso"),
    )

    hold_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("holds.id", ondelete="CASCADE"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("inventory_units.id"), primary_key=True, index=True
    )
    price_tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("price_tiers.id"))
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
