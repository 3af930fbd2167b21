"""Failed payments are closed at the provider once their hold has given up on them.

Stripe keeps a declined intent open for the payer to try another card; one completed after
the fan has released the hold and bought elsewhere would take money for nothing (it is
refunded, but the fan sees a charge). ``provider_closed_at`` records that the provider was
told to cancel it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payments", sa.Column("provider_closed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_payments_failed_open",
        "payments",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("state = 'failed' AND provider_ref IS NOT NULL AND provider_closed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_payments_failed_open", table_name="payments")
    op.drop_column("payments", "provider_closed_at")
