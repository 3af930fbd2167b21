"""Fresh statistics for the buying path's tables while they grow.

The buying path runs prepared statements, and PostgreSQL keeps the generic plan it made for
one until the tables' statistics change. On a new database the first sale makes those plans
while holds, orders and their items have a handful of rows, so they scan those tables
sequentially; with the default thresholds (50 rows + 10 %) and a minute between autovacuum
rounds the plans stayed that way for most of a sale: about 10,000 rows read per order by
1,000 orders in. Analyzed after 200 rows + 2 % of changes, the plans are replaced by index
plans within one autovacuum round of the sale's start.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HOT_TABLES = (
    "holds",
    "hold_items",
    "payments",
    "orders",
    "order_items",
    "tickets",
    "outbox",
    "idempotency_keys",
)


def upgrade() -> None:
    for table in HOT_TABLES:
        op.execute(
            f"ALTER TABLE {table} SET"
            " (autovacuum_analyze_threshold = 200, autovacuum_analyze_scale_factor = 0.02)"
        )


def downgrade() -> None:
    for table in HOT_TABLES:
        op.execute(f"ALTER TABLE {table} RESET (autovacuum_analyze_threshold, autovacuum_analyze_scale_factor)")
