"""Backups and restores; an environment's database connection, backup retention and
restore-drill smoke queries.

Revision ID: 0012_backups
Revises: 0011_promql_environment
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0012_backups"
down_revision: str | Sequence[str] | None = "0011_promql_environment"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Time = app.core.db.UTCDateTime


# The backup-age thresholds (app.thresholds.defaults keeps the current copy).
THRESHOLDS = (
    {
        "name": "backup_age",
        "title": "Age of the newest backup",
        "description": "Hours since the newest successful backup of a database.",
        "unit": "hours",
        "warning": 26.0,
        "critical": 48.0,
    },
    {
        "name": "backup_verified_age",
        "title": "Age of the newest verified backup",
        "description": "Hours since the newest backup that passed a restore drill was taken.",
        "unit": "hours",
        "warning": 192.0,
        "critical": 360.0,
    },
)


def upgrade() -> None:
    op.create_table(
        "backup",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("environment", sa.String(length=63), nullable=True),
        sa.Column("database", sa.String(length=200), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("storage_url", sa.String(length=2000), nullable=False),
        sa.Column("object_key", sa.String(length=1000), nullable=False),
        sa.Column("upload_id", sa.String(length=1000), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("row_counts", sa.JSON(), nullable=False),
        sa.Column("duration_seconds", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", Time(timezone=True), nullable=False),
        sa.Column("finished_at", Time(timezone=True), nullable=True),
        sa.Column("verified_at", Time(timezone=True), nullable=True),
        sa.Column("restore_seconds", sa.Double(), nullable=True),
        sa.Column("verification", sa.JSON(), nullable=True),
        sa.Column("verification_run_id", sa.String(length=36), nullable=True),
        sa.Column("deleted_at", Time(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup")),
    )
    with op.batch_alter_table("backup", schema=None) as batch_op:
        batch_op.create_index("ix_backup_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_backup_target_created_at", ["environment", "database", "created_at"], unique=False
        )
        batch_op.create_index("ix_backup_status", ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_backup_run_id"), ["run_id"], unique=False)

    op.create_table(
        "restore",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("backup_id", sa.String(length=36), nullable=False),
        sa.Column("environment", sa.String(length=63), nullable=True),
        sa.Column("database", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("force_reason", sa.Text(), nullable=True),
        sa.Column("pre_restore_backup_id", sa.String(length=36), nullable=True),
        sa.Column("restore_seconds", sa.Double(), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", Time(timezone=True), nullable=False),
        sa.Column("finished_at", Time(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restore")),
    )
    with op.batch_alter_table("restore", schema=None) as batch_op:
        batch_op.create_index("ix_restore_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_restore_backup_id"), ["backup_id"], unique=False)
        batch_op.create_index(
            "uq_restore_active_target",
            ["target"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    with op.batch_alter_table("environment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("database_url", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("backup_retention_days", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("backup_smoke_queries", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("environment", schema=None) as batch_op:
        batch_op.alter_column("backup_smoke_queries", server_default=None)

    threshold = sa.table(
        "threshold",
        sa.column("name", sa.String),
        sa.column("title", sa.String),
        sa.column("description", sa.Text),
        sa.column("unit", sa.String),
        sa.column("warning", sa.Float),
        sa.column("critical", sa.Float),
        sa.column("warning_severity", sa.String),
        sa.column("critical_severity", sa.String),
        sa.column("alert_names", sa.JSON),
        sa.column("prometheus_query", sa.Text),
        sa.column("updated_by", sa.String),
        sa.column("updated_at", Time(timezone=True)),
        sa.column("version", sa.Integer),
    )
    now = dt.datetime.now(dt.UTC)
    op.bulk_insert(
        threshold,
        [
            {
                **row,
                "warning_severity": "P2",
                "critical_severity": "P1",
                "alert_names": [],
                "prometheus_query": None,
                "updated_by": "system",
                "updated_at": now,
                "version": 1,
            }
            for row in THRESHOLDS
        ],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM threshold WHERE name IN ('backup_age', 'backup_verified_age')"))
    with op.batch_alter_table("environment", schema=None) as batch_op:
        batch_op.drop_column("backup_smoke_queries")
        batch_op.drop_column("backup_retention_days")
        batch_op.drop_column("database_url")
    with op.batch_alter_table("restore", schema=None) as batch_op:
        batch_op.drop_index("uq_restore_active_target")
        batch_op.drop_index(batch_op.f("ix_restore_backup_id"))
        batch_op.drop_index("ix_restore_created_at_id")
    op.drop_table("restore")
    with op.batch_alter_table("backup", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backup_run_id"))
        batch_op.drop_index("ix_backup_status")
        batch_op.drop_index("ix_backup_target_created_at")
        batch_op.drop_index("ix_backup_created_at_id")
    op.drop_table("backup")
