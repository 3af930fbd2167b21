"""Tickets: one per sold unit, each carrying a signed token a gate can check offline; and
every scan a gate reports, admitted or not."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
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


class ScanMode(enum.StrEnum):
    # Checked against the database at the gate, or verified on the device and uploaded later.
    ONLINE = "online"
    OFFLINE = "offline"


class ScanResult(enum.StrEnum):
    ADMITTED = "admitted"
    ALREADY_ADMITTED = "already_admitted"
    REVOKED = "revoked"
    WRONG_EVENT = "wrong_event"
    # An offline scan of a ticket that another scan had already admitted.
    CONFLICT = "conflict"


class TicketScan(Base):
    """One row per scan received, whatever its answer; rows are only ever inserted.

    ``scanned_at`` is when the gate saw the ticket: the database clock for online scans, the
    device's clock for offline ones, never later than ``received_at``. ``device_scanned_at``
    keeps the offline device's own time unchanged: it identifies the scan, so uploading it
    again is recognised even when ``scanned_at`` had to be clamped. ``event_id`` is the
    ticket's event. ``details`` holds what the answer was based on (for a conflict, the
    admission it conflicts with).
    """

    __tablename__ = "ticket_scans"
    __table_args__ = (
        CheckConstraint("scanned_at <= received_at", name="scanned_not_after_received"),
        CheckConstraint(
            "(mode = 'offline') = (device_scanned_at IS NOT NULL)", name="offline_has_device_time"
        ),
        # The identity of an offline scan: the same upload twice is one scan, by the database.
        UniqueConstraint("ticket_id", "gate", "device_scanned_at"),
        Index(
            "ix_ticket_scans_conflicts",
            "event_id",
            "received_at",
            postgresql_where=text("mode = 'offline' AND result IN ('conflict', 'revoked')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id"))
    gate: Mapped[str] = mapped_column(String(120))
    staff_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_keys.id"))
    mode: Mapped[ScanMode] = mapped_column(state_enum(ScanMode, "mode"))
    scanned_at: Mapped[dt.datetime]
    device_scanned_at: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = now_default()
    result: Mapped[ScanResult] = mapped_column(state_enum(ScanResult, "result"))
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
