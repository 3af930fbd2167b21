"""Ticket scans: every scan a gate reports, online or uploaded after working offline.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ticket_scans",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("gate", sa.String(length=120), nullable=False),
        sa.Column("staff_key_id", sa.UUID(), nullable=True),
        sa.Column(
            "mode",
            sa.Enum("online", "offline", name="mode", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("device_scanned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "result",
            sa.Enum(
                "admitted",
                "already_admitted",
                "revoked",
                "wrong_event",
                "conflict",
                name="result",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint("scanned_at <= received_at", name=op.f("ck_ticket_scans_scanned_not_after_received")),
        sa.CheckConstraint(
            "(mode = 'offline') = (device_scanned_at IS NOT NULL)",
            name=op.f("ck_ticket_scans_offline_has_device_time"),
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_ticket_scans_ticket_id_tickets"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name=op.f("fk_ticket_scans_event_id_events")),
        sa.ForeignKeyConstraint(
            ["staff_key_id"], ["staff_keys.id"], name=op.f("fk_ticket_scans_staff_key_id_staff_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_scans")),
        sa.UniqueConstraint(
            "ticket_id",
            "gate",
            "device_scanned_at",
            name=op.f("uq_ticket_scans_ticket_id_gate_device_scanned_at"),
        ),
    )
    op.create_index(
        "ix_ticket_scans_conflicts",
        "ticket_scans",
        ["event_id", "received_at"],
        unique=False,
        postgresql_where=sa.text("mode = 'offline' AND result IN ('conflict', 'revoked')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_ticket_scans_conflicts",
        table_name="ticket_scans",
        postgresql_where=sa.text("mode = 'offline' AND result IN ('conflict', 'revoked')"),
    )
    op.drop_table("ticket_scans")
