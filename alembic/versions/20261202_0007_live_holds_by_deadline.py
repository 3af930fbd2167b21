"""Live holds by deadline: the sweeper's index.

The sweeper asks every 15 s for the live holds whose deadline has passed, oldest first;
without an index for it that read every hold ever made. A partial index on the live states
holds only the few holds that can still expire.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_holds_live_expires_at",
        "holds",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('active', 'paying', 'failed')"),
    )


def downgrade() -> None:
    op.drop_index("ix_holds_live_expires_at", table_name="holds")
