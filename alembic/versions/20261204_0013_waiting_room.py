"""The waiting room's record: each event's room settings, and every fan it admitted.

The queue itself lives in Redis; what must survive a Redis restart is here. An admission is
unique per event and fan (the primary key), so a fan is never admitted twice, whatever Redis
forgets.

Revision ID: 0013_waiting_room
Revises: 0012_event_admin
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0013_waiting_room"
down_revision: str | Sequence[str] | None = "0012_event_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "waiting_rooms",
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("opens_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sale_opens_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rate_per_minute", sa.Integer(), server_default="500", nullable=False),
        sa.Column("window_seconds", sa.Integer(), server_default="600", nullable=False),
        sa.Column("max_shoppers", sa.Integer(), nullable=True),
        sa.Column("grace_seconds", sa.Integer(), server_default="120", nullable=False),
        sa.Column("paused", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("grace_seconds BETWEEN 10 AND 3600", name=op.f("ck_waiting_rooms_grace_range")),
        sa.CheckConstraint(
            "max_shoppers IS NULL OR max_shoppers BETWEEN 1 AND 1000000",
            name=op.f("ck_waiting_rooms_max_shoppers_range"),
        ),
        sa.CheckConstraint(
            "opens_at IS NULL OR sale_opens_at IS NULL OR opens_at <= sale_opens_at",
            name=op.f("ck_waiting_rooms_opens_before_sale"),
        ),
        sa.CheckConstraint("rate_per_minute BETWEEN 1 AND 100000", name=op.f("ck_waiting_rooms_rate_range")),
        sa.CheckConstraint("window_seconds BETWEEN 60 AND 3600", name=op.f("ck_waiting_rooms_window_range")),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_waiting_rooms_event_id_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_waiting_rooms")),
    )
    op.create_table(
        "waiting_room_admissions",
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "window_ends_at > admitted_at", name=op.f("ck_waiting_room_admissions_window_after_admission")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["waiting_rooms.event_id"],
            name=op.f("fk_waiting_room_admissions_event_id_waiting_rooms"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["fan_id"], ["fans.id"], name=op.f("fk_waiting_room_admissions_fan_id_fans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_id", "fan_id", name=op.f("pk_waiting_room_admissions")),
    )


def downgrade() -> None:
    op.drop_table("waiting_room_admissions")
    op.drop_table("waiting_rooms")
