"""The runbook catalog's approvals and schedules; an environment's Docker hosts and its
application Redis.

Revision ID: 0013_runbooks
Revises: 0012_backups
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0013_runbooks"
down_revision: str | Sequence[str] | None = "0012_backups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = app.core.db.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("environment") as batch:
        batch.add_column(sa.Column("docker_hosts", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("redis_url", sa.String(length=2000), nullable=True))
    op.execute("UPDATE environment SET docker_hosts = '[]'")
    with op.batch_alter_table("environment") as batch:
        batch.alter_column("docker_hosts", existing_type=sa.JSON(), nullable=False)

    op.create_table(
        "run_approval",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_at", Time(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "position"),
    )
    op.create_index("ix_run_approval_run_id", "run_approval", ["run_id"])

    op.create_table(
        "schedule",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("runbook", sa.String(length=100), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("next_run_at", Time(timezone=True), nullable=True),
        sa.Column("last_slot_at", Time(timezone=True), nullable=True),
        sa.Column("last_run_id", sa.String(length=36), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", Time(timezone=True), nullable=False),
        sa.Column("updated_at", Time(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_schedule_runbook", "schedule", ["runbook"])
    op.create_index("ix_schedule_enabled_next_run_at", "schedule", ["enabled", "next_run_at"])
    op.create_table(
        "schedule_slot",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("schedule_id", sa.String(length=36), nullable=False),
        sa.Column("slot_at", Time(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("detail", sa.String(length=2000), nullable=True),
        sa.Column("created_at", Time(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedule.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("schedule_id", "slot_at"),
    )
    op.create_table(
        "schedule_default",
        sa.Column("runbook", sa.String(length=100), nullable=False),
        sa.Column("created_at", Time(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("runbook"),
    )


def downgrade() -> None:
    op.drop_table("schedule_default")
    op.drop_table("schedule_slot")
    op.drop_index("ix_schedule_enabled_next_run_at", table_name="schedule")
    op.drop_index("ix_schedule_runbook", table_name="schedule")
    op.drop_table("schedule")
    op.drop_index("ix_run_approval_run_id", table_name="run_approval")
    op.drop_table("run_approval")
    with op.batch_alter_table("environment") as batch:
        batch.drop_column("redis_url")
        batch.drop_column("docker_hosts")
