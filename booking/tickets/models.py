"""Tickets: one per sold unit, each carrying a signed token a gate can check offline."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, now_default, state_enum, uuid_pk


class TicketState(enum.StrEnum):
    VALID = "valid"
    REVOKED = "revoked"


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint("(state = 'revoked') = (revoked_at IS NOT NULL)", name="revoked_has_time"),
        CheckConstraint("(checked_in_at IS NULL) = (checked_in_gate IS NULL)", name="checkin_has_gate"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    order_item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("order_items.id"), unique=True)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id"), index=True)
    unit_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("inventory_units.id"))
    state: Mapped[TicketState] = mapped_column(
        state_enum(TicketState, "state"), server_default=TicketState.VALID.value
    )
    issued_at: Mapped[dt.datetime] = now_default()
    revoked_at: Mapped[dt.datetime | None]
    checked_in_at: Mapped[dt.datetime | None]
    checked_in_gate: Mapped[str | None] = mapped_column(String(120))
