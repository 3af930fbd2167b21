"""The per-fan cap a hold was granted under.

A hold stops counting toward its fan's cap at its deadline, but its payment may still
succeed after that (a slow provider, or a declined card retried on the provider's page);
the fan may have bought other tickets meanwhile. The confirmation then checks the cap again,
against the one the hold was granted under. Holds made before this have none and are not
checked again (as before).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("holds", sa.Column("ticket_cap", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("holds", "ticket_cap")
