"""The waiting room's record: each event's room settings, and every fan it admitted.

Redis carries the queue itself (``booking.waiting_room.queue``), which may be lost; these two
tables carry what must not be. A room's settings survive any restart, and an admission is a
row here before any fan is told of it, so a fan is admitted at most once per event however
often Redis forgets the queue: the primary key is (event, fan).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, now_default

# Bounds staff may set (``booking.waiting_room.service.set_room`` explains each in its errors).
MIN_RATE_PER_MINUTE, MAX_RATE_PER_MINUTE = 1, 100_000
MIN_WINDOW_SECONDS, MAX_WINDOW_SECONDS = 60, 3600
MIN_GRACE_SECONDS, MAX_GRACE_SECONDS = 10, 3600
MAX_SHOPPERS_LIMIT = 1_000_000

DEFAULT_RATE_PER_MINUTE = 500
DEFAULT_WINDOW_SECONDS = 600
DEFAULT_GRACE_SECONDS = 120


class WaitingRoom(Base):
    """One event's waiting room, as staff set it. ``sale_opens_at`` is when admission starts
    (fans who joined before it are drawn in a random order then); ``opens_at`` when fans may
    join (none: as soon as the room is enabled). ``paused`` stops admission, not joining."""

    __tablename__ = "waiting_rooms"
    __table_args__ = (
        CheckConstraint(
            f"rate_per_minute BETWEEN {MIN_RATE_PER_MINUTE} AND {MAX_RATE_PER_MINUTE}", name="rate_range"
        ),
        CheckConstraint(
            f"window_seconds BETWEEN {MIN_WINDOW_SECONDS} AND {MAX_WINDOW_SECONDS}", name="window_range"
        ),
        CheckConstraint(
            f"grace_seconds BETWEEN {MIN_GRACE_SECONDS} AND {MAX_GRACE_SECONDS}", name="grace_range"
        ),
        CheckConstraint(
            f"max_shoppers IS NULL OR max_shoppers BETWEEN 1 AND {MAX_SHOPPERS_LIMIT}",
            name="max_shoppers_range",
        ),
        CheckConstraint(
            "opens_at IS NULL OR sale_opens_at IS NULL OR opens_at <= sale_opens_at", name="opens_before_sale"
        ),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="false")
    opens_at: Mapped[dt.datetime | None]
    sale_opens_at: Mapped[dt.datetime | None]
    rate_per_minute: Mapped[int] = mapped_column(Integer, server_default=str(DEFAULT_RATE_PER_MINUTE))
    window_seconds: Mapped[int] = mapped_column(Integer, server_default=str(DEFAULT_WINDOW_SECONDS))
    max_shoppers: Mapped[int | None] = mapped_column(Integer)
    grace_seconds: Mapped[int] = mapped_column(Integer, server_default=str(DEFAULT_GRACE_SECONDS))
    paused: Mapped[bool] = mapped_column(Boolean, server_default="false")
    created_at: Mapped[dt.datetime] = now_default()
    updated_at: Mapped[dt.datetime] = now_default()


class AdmissionRecord(Base):
    """A fan let through an event's waiting room, once: the shopping window it was given
    (``window_ends_at``), and ``ended_at`` when the fan gave it up early (left the room).
    An admission token is only ever issued for a row here, and expires with its window."""

    __tablename__ = "waiting_room_admissions"
    # The primary key (event first) also finds an event's admissions, for the counts staff
    # see and for the admission tick's reload after Redis lost the room.
    __table_args__ = (CheckConstraint("window_ends_at > admitted_at", name="window_after_admission"),)

    event_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("waiting_rooms.event_id", ondelete="CASCADE"), primary_key=True
    )
    fan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("fans.id", ondelete="CASCADE"), primary_key=True)
    admitted_at: Mapped[dt.datetime]
    window_ends_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
