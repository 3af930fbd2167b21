"""Refunds stay unsettled until the provider has paid them back.

A refund the provider accepted but has not paid out yet (Stripe's ``pending``) was counted as
done; a provider error left one pending and retried for ever with nobody told. Now:
``submitted`` for accepted-not-paid, and the errors met (``attempts``, ``last_error``) so a
refund that keeps failing becomes ``failed`` and shows up for on-call.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_refunds_state"), "refunds", type_="check")
    op.create_check_constraint(
        op.f("ck_refunds_state"),
        "refunds", "state IN ('pending', 'submitted', 'succeeded', 'failed')"
    )
    op.add_column("refunds", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("refunds", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("refunds", sa.Column("retries", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("refunds", "retries")
    op.drop_column("refunds", "last_error")
    op.drop_column("refunds", "attempts")
    op.execute("UPDATE refunds SET state = 'pending' WHERE state = 'submitted'")
    op.drop_constraint(op.f("ck_refunds_state"), "refunds", type_="check")
    op.create_check_constraint(op.f("ck_refunds_state"), "refunds", "state IN ('pending', 'succeeded', 'failed')")
