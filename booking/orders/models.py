"""Orders: what a confirmed hold becomes, and what refunds and cancellations act on."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from booking.catalog.models import CURRENCY_CHECK
from booking.db import Base, now_default, state_enum, uuid_pk


class OrderState(enum.StrEnum):
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class OrderChannel(enum.StrEnum):
    ONLINE = "online"
    BOX_OFFICE = "box_office"


class OrderItemState(enum.StrEnum):
    ACTIVE = "active"
    REFUNDED = "refunded"


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("num_nonnulls(fan_id, staff_key_id) = 1", name="one_owner"),
        CheckConstraint("total_minor >= 0", name="total_not_negative"),
        CheckConstraint(CURRENCY_CHECK, name="currency_iso"),
        Index("ix_orders_fan_created", "fan_id", "created_at"),
        # The fan's cap counts the fan's tickets for one event inside every hold statement.
        Index("ix_orders_fan_event", "fan_id", "event_id"),
        Index("ix_orders_event_state", "event_id", "state"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    # One order per hold: a replayed confirmation cannot create a second one.
    hold_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("holds.id"), unique=True)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id"))
    fan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("fans.id"))
    staff_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff_keys.id"))
    buyer_email: Mapped[str | None] = mapped_column(String(320))
    channel: Mapped[OrderChannel] = mapped_column(state_enum(OrderChannel, "channel"))
    state: Mapped[OrderState] = mapped_column(
        state_enum(OrderState, "state"), server_default=OrderState.CONFIRMED.value
    )
    total_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime] = now_default()
    cancelled_at: Mapped[dt.datetime | None]


class OrderItem(Base):
    """A unit sold in an order. A unit may be sold, refunded and sold again, so its history
    has many items, but at most one ``active`` item (partial unique index)."""

    __tablename__ = "order_items"
    __table_args__ = (
        CheckConstraint("price_minor >= 0", name="price_not_negative"),
        CheckConstraint(CURRENCY_CHECK, name="currency_iso"),
        Index(
            "uq_order_items_active_unit",
            "unit_id",
            unique=True,
            postgresql_where=text("state = 'active'"),
        ),
        # An order's items, and its active ones for the fan's cap: with the order id alone
        # the planner's generic plan for the cap met the active-unit index instead and read
        # every active item of the event.
        Index("ix_order_items_order_state", "order_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # Indexed with the state (see ``ix_order_items_order_state``).
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    unit_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("inventory_units.id"))
    price_tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("price_tiers.id"))
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[OrderItemState] = mapped_column(
        state_enum(OrderItemState, "state"), server_default=OrderItemState.ACTIVE.value
    )
