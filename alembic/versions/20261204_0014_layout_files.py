"""What a layout file says about seats beyond their place: companion and restricted-view seats,
each seat's place in its row's numbering, the layout's price tiers and which rows and GA areas
they name, and how the file placed the seats on the map (so an export writes the same
shorthand back instead of every coordinate).

Existing seats are numbered in their row from left to right on the map, as every seat made
before this revision was.

Revision ID: 0014_layout_files
Revises: 0013_waiting_room
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0014_layout_files"
down_revision: str | Sequence[str] | None = "0013_waiting_room"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "seating_layouts",
        sa.Column("tiers", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
    )
    op.add_column("sections", sa.Column("placement", postgresql.JSONB(), nullable=True))
    op.add_column("seat_rows", sa.Column("tier", sa.String(length=120), nullable=True))
    op.add_column("seat_rows", sa.Column("placement", postgresql.JSONB(), nullable=True))
    op.add_column("seats", sa.Column("sort_order", sa.Integer(), server_default="0", nullable=False))
    op.add_column("seats", sa.Column("companion", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("seats", sa.Column("restricted_view", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("ga_areas", sa.Column("tier", sa.String(length=120), nullable=True))
    op.add_column("ga_areas", sa.Column("sort_order", sa.Integer(), server_default="0", nullable=False))
    op.execute(
        "UPDATE seats SET sort_order = numbered.n FROM ("
        " SELECT id, row_number() OVER (PARTITION BY row_id ORDER BY x, id) - 1 AS n FROM seats"
        ") AS numbered WHERE numbered.id = seats.id"
    )


def downgrade() -> None:
    op.drop_column("ga_areas", "sort_order")
    op.drop_column("ga_areas", "tier")
    op.drop_column("seats", "restricted_view")
    op.drop_column("seats", "companion")
    op.drop_column("seats", "sort_order")
    op.drop_column("seat_rows", "placement")
    op.drop_column("seat_rows", "tier")
    op.drop_column("sections", "placement")
    op.drop_column("seating_layouts", "tiers")
