"""The offline test payment provider's memory.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "offline_gateway_payments",
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("behaviour", sa.String(length=20), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name=op.f("pk_offline_gateway_payments")),
        sa.UniqueConstraint("ref", name=op.f("uq_offline_gateway_payments_ref")),
    )


def downgrade() -> None:
    op.drop_table("offline_gateway_payments")
