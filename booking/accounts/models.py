"""Who acts: fans (the public API) and staff keys (console, CLI, gates)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, now_default, state_enum, uuid_pk


class StaffRole(enum.StrEnum):
    BOX_OFFICE = "box_office"
    ON_CALL = "on_call"
    GATE = "gate"
    ADMIN = "admin"


class Fan(Base):
    __tablename__ = "fans"

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(120), server_default="")
    created_at: Mapped[dt.datetime] = now_default()
    disabled_at: Mapped[dt.datetime | None]


# Emails are unique whatever their case: Ann@x.org and ann@x.org are one fan.
Index("uq_fans_email_lower", func.lower(Fan.email), unique=True)


class FanSession(Base):
    """A bearer token. Only its SHA-256 is stored: a leaked table grants no sessions."""

    __tablename__ = "fan_sessions"

    id: Mapped[uuid.UUID] = uuid_pk()
    fan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fans.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = now_default()
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class StaffKey(Base):
    """A staff API key. The secret is shown once; ``key_prefix`` finds the row and
    ``key_hash`` (SHA-256 of a 256-bit random secret) proves it."""

    __tablename__ = "staff_keys"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(120), unique=True)
    role: Mapped[StaffRole] = mapped_column(state_enum(StaffRole, "role"))
    key_prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = now_default()
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
