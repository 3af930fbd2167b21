"""Free units in id order: the GA claim reads its next places from here.

A partial index on the available units of each tier, in id order, so picking the lowest free
places reads only those few entries instead of walking the table past every unit already
sold (the cost of a claim grew with the sale).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_inventory_units_free",
        "inventory_units",
        ["event_id", "price_tier_id", "id"],
        unique=False,
        postgresql_where=sa.text("state = 'available'"),
    )


def downgrade() -> None:
    op.drop_index("ix_inventory_units_free", table_name="inventory_units")
