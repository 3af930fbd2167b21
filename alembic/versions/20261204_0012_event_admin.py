"""Events administered by staff: taken off sale, with their own fan cap and hold lifetime.

``off_sale`` is the organiser's decision that the sale is over (before its window ends, or
for good), kept apart from on-call's ``paused``. The phases fans see (scheduled, sold out,
ended) are not stored: they follow from the status, the database clock and the inventory
(``booking.catalog.lifecycle``).

``max_tickets_per_fan`` and ``hold_ttl_seconds`` override the configured cap and hold
lifetime for one event; null means the configured ones.

Revision ID: 0012_event_admin
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012_event_admin"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "'draft', 'on_sale', 'paused', 'cancelled', 'completed'"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_events_status"), "events", type_="check")
    op.create_check_constraint(op.f("ck_events_status"), "events", f"status IN ({_STATUSES}, 'off_sale')")
    op.add_column("events", sa.Column("max_tickets_per_fan", sa.SmallInteger(), nullable=True))
    op.add_column("events", sa.Column("hold_ttl_seconds", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_events_fan_cap_range"), "events", "max_tickets_per_fan BETWEEN 1 AND 100"
    )
    op.create_check_constraint(
        op.f("ck_events_hold_ttl_range"), "events", "hold_ttl_seconds BETWEEN 300 AND 600"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_events_hold_ttl_range"), "events", type_="check")
    op.drop_constraint(op.f("ck_events_fan_cap_range"), "events", type_="check")
    op.drop_column("events", "hold_ttl_seconds")
    op.drop_column("events", "max_tickets_per_fan")
    # An event taken off sale was, before this revision, one whose sale had stopped.
    op.execute("UPDATE events SET status = 'paused' WHERE status = 'off_sale'")
    op.drop_constraint(op.f("ck_events_status"), "events", type_="check")
    op.create_check_constraint(op.f("ck_events_status"), "events", f"status IN ({_STATUSES})")
