"""Backups (a dump stored as one object and read back), their verification drills, and
restores (at most one active per database, enforced by a partial unique index)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id


class BackupStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"  # dumping, uploading or reading back
    SUCCESS = "success"  # stored and read back: size and SHA-256 matched
    FAILURE = "failure"  # never good: no object is kept (a partial one is cleaned up)
    UNVERIFIABLE = "unverifiable"  # a restore drill failed (or the object changed)
    DELETED = "deleted"  # retention or an admin deleted the object; the row is history


class BackupOrigin(enum.StrEnum):
    REQUEST = "request"  # POST /v1/backups
    SCHEDULE = "schedule"  # the daily schedule
    DEPLOYMENT = "deployment"  # a deployment's pre-deploy step
    RESTORE = "restore"  # the safety backup a restore takes of its target first


class Backup(Base):
    __tablename__ = "backup"
    __table_args__ = (
        Index("ix_backup_created_at_id", "created_at", "id"),
        Index("ix_backup_target_created_at", "environment", "database", "created_at"),
        Index("ix_backup_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # The run that took it: the backup run itself (``id == run_id``), or the deployment
    # or restore run whose step took it.
    run_id: Mapped[str] = mapped_column(String(36), index=True)
    origin: Mapped[str] = mapped_column(String(16), default=BackupOrigin.REQUEST.value)
    # ``None``: the control plane's own database (``formula-ops backup --self``).
    environment: Mapped[str | None] = mapped_column(String(63))
    database: Mapped[str] = mapped_column(String(200))
    engine: Mapped[str] = mapped_column(String(16))  # postgresql | sqlite
    format: Mapped[str] = mapped_column(String(16))  # custom | plain | sqlite
    status: Mapped[str] = mapped_column(String(16), default=BackupStatus.IN_PROGRESS.value)
    storage_url: Mapped[str] = mapped_column(String(2000))  # the object's full URL
    object_key: Mapped[str] = mapped_column(String(1000))
    # An unfinished upload to clean up if the backup fails (S3 multipart upload id, or
    # the partial file's name); cleared once complete or cleaned up.
    upload_id: Mapped[str | None] = mapped_column(String(1000))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    row_counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    duration_seconds: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    # The last restore drill: when it passed (``verified_at``), the measured restore
    # time, and the run that performed it.
    verified_at: Mapped[dt.datetime | None]
    restore_seconds: Mapped[float | None]
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    verification_run_id: Mapped[str | None] = mapped_column(String(36))
    deleted_at: Mapped[dt.datetime | None]
    deleted_by: Mapped[str | None] = mapped_column(String(200))


class Restore(Base):
    """A restore of a backup into its target database (a run of kind ``restore``; the
    row's id is the run's)."""

    __tablename__ = "restore"
    __table_args__ = (
        Index("ix_restore_created_at_id", "created_at", "id"),
        # At most one restore per database at a time, across every API and worker.
        Index(
            "uq_restore_active_target",
            "target",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    backup_id: Mapped[str] = mapped_column(String(36), index=True)
    environment: Mapped[str | None] = mapped_column(String(63))
    database: Mapped[str] = mapped_column(String(200))
    # ``<environment>/<database>`` (``-/<database>`` for the control plane's own).
    target: Mapped[str] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    forced: Mapped[bool] = mapped_column(default=False)
    force_reason: Mapped[str | None] = mapped_column(Text)
    # The safety backup of the target taken before it was overwritten.
    pre_restore_backup_id: Mapped[str | None] = mapped_column(String(36))
    restore_seconds: Mapped[float | None]
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
