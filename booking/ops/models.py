"""The audit log: who did what to what, when, and how it ended."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, now_default, state_enum


class ActorType(enum.StrEnum):
    STAFF = "staff"
    FAN = "fan"
    SYSTEM = "system"
    CLI = "cli"


class Outcome(enum.StrEnum):
    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_target", "target_type", "target_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = now_default()
    actor_type: Mapped[ActorType] = mapped_column(state_enum(ActorType, "actor_type"))
    actor_id: Mapped[str | None] = mapped_column(String(120))
    actor_name: Mapped[str] = mapped_column(String(120), server_default="")
    action: Mapped[str] = mapped_column(String(120))
    target_type: Mapped[str | None] = mapped_column(String(60))
    target_id: Mapped[str | None] = mapped_column(String(120))
    outcome: Mapped[Outcome] = mapped_column(state_enum(Outcome, "outcome"))
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
