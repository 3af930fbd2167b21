"""The one inventory table: every sellable place of every event is a row here."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, text
from sqlalchemy.orm import Mapped, mapped_column

from booking.db import Base, state_enum


class UnitState(enum.StrEnum):
    AVAILABLE = "available"
    HELD = "held"
    SOLD = "sold"
    # Withheld from sale by the promoter or the venue (broken seat, camera position).
    BLOCKED = "blocked"


class InventoryUnit(Base):
    """A reserved seat (``seat_id``) or one place of a GA area (``ga_area_id``) for one event.

    Invariants the constraints carry, whatever code runs against the table:
    a unit is a seat xor a GA place; a seat appears once per event; a held unit names exactly
    one hold and its deadline; a sold unit names exactly one order and no hold; an available
    or blocked unit names neither. One ``hold_id`` and one ``order_id`` column make "at most
    one live hold or order per unit" structural.
    """

    __tablename__ = "inventory_units"
    __table_args__ = (
        CheckConstraint("(seat_id IS NULL) <> (ga_area_id IS NULL)", name="seat_xor_ga"),
        CheckConstraint(
            "(state IN ('available', 'blocked')"
            " AND hold_id IS NULL AND held_until IS NULL AND order_id IS NULL)"
            " OR (state = 'held' AND hold_id IS NOT NULL AND held_until IS NOT NULL AND order_id IS NULL)"
            " OR (state = 'sold' AND order_id IS NOT NULL AND hold_id IS NULL AND held_until IS NULL)",
            name="state_owner_consistent",
        ),
        # A seat is on sale once per event. Partial, like the owner indexes below: a unit's
        # row is rewritten (not updated in place) at every state change, since its state is
        # indexed, and each rewrite adds an entry to every index whose predicate it meets; GA
        # places (no seat) and units nobody holds or bought add none here.
        Index(
            "uq_inventory_units_event_id_seat_id",
            "event_id",
            "seat_id",
            unique=True,
            postgresql_where=text("seat_id IS NOT NULL"),
        ),
        Index("ix_inventory_units_hold_id", "hold_id", postgresql_where=text("hold_id IS NOT NULL")),
        Index("ix_inventory_units_order_id", "order_id", postgresql_where=text("order_id IS NOT NULL")),
        Index("ix_inventory_units_claim", "event_id", "price_tier_id", "state"),
        # The GA claim's next free places, lowest id first, without walking past sold ones.
        Index(
            "ix_inventory_units_free",
            "event_id",
            "price_tier_id",
            "id",
            postgresql_where=text("state = 'available'"),
        ),
        Index(
            "ix_inventory_units_held_until",
            "held_until",
            postgresql_where=text("state = 'held'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    price_tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("price_tiers.id"))
    seat_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("seats.id"))
    ga_area_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("ga_areas.id"))
    state: Mapped[UnitState] = mapped_column(
        state_enum(UnitState, "state"), server_default=UnitState.AVAILABLE.value
    )
    hold_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("holds.id"))
    held_until: Mapped[dt.datetime | None]
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=text("now()"))
