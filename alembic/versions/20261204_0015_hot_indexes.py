"""Indexes of the buying path's tables shaped for the writes a sale makes.

A unit's state is indexed, so every state change writes a new row version and an entry in
each of the unit's indexes whose predicate it meets. The seat, hold and order indexes now
leave out the units they say nothing about (GA places, units nobody holds or bought), which
takes a GA place's index writes per sale from eleven to seven. The fan's cap, counted inside
every hold, gets indexes that lead straight to the fan's orders for the event and to their
active items.

Revision ID: 0015_hot_indexes
Revises: 0014_layout_files
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0015_hot_indexes"
down_revision: str | Sequence[str] | None = "0014_layout_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("uq_inventory_units_event_id_seat_id", "inventory_units", type_="unique")
    op.create_index(
        "uq_inventory_units_event_id_seat_id",
        "inventory_units",
        ["event_id", "seat_id"],
        unique=True,
        postgresql_where=sa.text("seat_id IS NOT NULL"),
    )
    for column in ("hold_id", "order_id"):
        op.drop_index(f"ix_inventory_units_{column}", table_name="inventory_units")
        op.create_index(
            f"ix_inventory_units_{column}",
            "inventory_units",
            [column],
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
        )
    op.create_index("ix_orders_fan_event", "orders", ["fan_id", "event_id"])
    op.drop_index("ix_order_items_order_id", table_name="order_items")
    op.create_index("ix_order_items_order_state", "order_items", ["order_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_order_items_order_state", table_name="order_items")
    op.create_index("ix_order_items_order_id", "order_items", ["order_id"])
    op.drop_index("ix_orders_fan_event", table_name="orders")
    for column in ("hold_id", "order_id"):
        op.drop_index(f"ix_inventory_units_{column}", table_name="inventory_units")
        op.create_index(f"ix_inventory_units_{column}", "inventory_units", [column])
    op.drop_index("uq_inventory_units_event_id_seat_id", table_name="inventory_units")
    op.create_unique_constraint("uq_inventory_units_event_id_seat_id", "inventory_units", ["event_id", "seat_id"])
