"""The events of backups and restores, each written in the transaction of the change
it announces."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from app.backups.models import Backup, Restore
from app.core.paths import V1
from app.outbox.catalog import EventData, EventLinks, EventType
from app.runs.events import RunEventData, RunResourceLinks
from app.runs.models import RunKind


class BackupEventData(EventData):
    """A backup: what was dumped, where it is stored, and how it ended."""

    backup_id: str
    run_id: str = Field(description="The run that took it (a backup, deployment or restore).")
    origin: str = Field(description="`request`, `schedule`, `deployment` or `restore`.")
    environment: str | None = Field(description="Null: the control plane's own database.")
    database: str
    status: str
    storage_url: str
    size_bytes: int | None
    sha256: str | None
    verified_at: dt.datetime | None
    restore_seconds: float | None = Field(description="The last restore drill's duration.")
    error: str | None = Field(description="Why it failed (redacted).")
    links: EventLinks


class RestoreEventData(RunEventData):
    """A restore of a backup over its target database (a run of kind ``restore``: its
    start, and its end as every run's end is announced)."""

    kind: Literal["restore"]
    restore_id: str = Field(description="The restore's id (the run's).")
    backup_id: str
    database: str
    forced: bool = Field(description="Restored from a backup whose drill failed, on purpose.")
    pre_restore_backup_id: str | None = Field(
        description="The safety backup of the target taken before it was overwritten."
    )
    restore_seconds: float | None
    error: str | None = Field(description="Why it failed (redacted).")
    links: RunResourceLinks


def backup_data(backup: Backup) -> dict[str, Any]:
    return BackupEventData(
        backup_id=backup.id,
        run_id=backup.run_id,
        origin=backup.origin,
        environment=backup.environment,
        database=backup.database,
        status=backup.status,
        storage_url=backup.storage_url,
        size_bytes=backup.size_bytes,
        sha256=backup.sha256,
        verified_at=backup.verified_at,
        restore_seconds=backup.restore_seconds,
        error=backup.error,
        links=EventLinks(self=f"{V1}/backups/{backup.id}"),
    ).model_dump(mode="json")


def restore_links(restore_id: str) -> dict[str, str]:
    return {"self": f"{V1}/restores/{restore_id}", "run": f"{V1}/runs/{restore_id}"}


def restore_fields(restore: Restore, error: str | None = None) -> dict[str, Any]:
    """What a restore's events add to a run's (its end's announcement gets these from
    the kind's finish hook)."""
    return {
        "restore_id": restore.id,
        "backup_id": restore.backup_id,
        "database": restore.database,
        "forced": restore.forced,
        "pre_restore_backup_id": restore.pre_restore_backup_id,
        "restore_seconds": restore.restore_seconds,
        "error": error,
        "links": restore_links(restore.id),
    }


def restore_data(
    restore: Restore, status: str, error: str | None = None, failure_type: str | None = None
) -> dict[str, Any]:
    return RestoreEventData(
        id=restore.id,
        kind=RunKind.RESTORE.value,
        environment=restore.environment,
        status=status,
        failure_type=failure_type,
        **restore_fields(restore, error),
    ).model_dump(mode="json")


_BACKUP_EXAMPLE: dict[str, Any] = {
    "backup_id": "01936f3e-8a10-7c3e-9f10-2b4d5e6f7a8b",
    "run_id": "01936f3e-8a10-7c3e-9f10-2b4d5e6f7a8b",
    "origin": "schedule",
    "environment": "production",
    "database": "formula_pm",
    "status": "success",
    "storage_url": "s3://formula-ops-backups/production/formula_pm/"
    "20260101T023000Z_01936f3e-8a10-7c3e-9f10-2b4d5e6f7a8b.dump",
    "size_bytes": 73400320,
    "sha256": "9f2b5c0e8d1a4f3b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d",
    "verified_at": None,
    "restore_seconds": None,
    "error": None,
    "links": {"self": f"{V1}/backups/01936f3e-8a10-7c3e-9f10-2b4d5e6f7a8b"},
}
_RESTORE_ID = "01936f40-1b20-7d4e-8a21-3c5e6f708192"
_RESTORE_EXAMPLE: dict[str, Any] = {
    "id": _RESTORE_ID,
    "kind": "restore",
    "failure_type": None,
    "restore_id": _RESTORE_ID,
    "backup_id": "01936f3e-8a10-7c3e-9f10-2b4d5e6f7a8b",
    "environment": "production",
    "database": "formula_pm",
    "status": "success",
    "forced": False,
    "pre_restore_backup_id": "01936f40-1b25-7f00-9b31-4d6e7f8091a2",
    "restore_seconds": 41.7,
    "error": None,
    "links": restore_links(_RESTORE_ID),
}


def _example(status: str, **changes: Any) -> dict[str, Any]:
    return {**_BACKUP_EXAMPLE, "status": status, **changes}


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        "backup.succeeded",
        "A backup was stored and read back (size and SHA-256 matched).",
        BackupEventData,
        _example("success"),
    ),
    EventType(
        "backup.failed",
        "A backup failed; nothing of it is kept.",
        BackupEventData,
        _example("failure", size_bytes=None, sha256=None, error="pg_dump exited with 1"),
    ),
    EventType(
        "backup.verified",
        "A restore drill passed: restored into a scratch database, counts matched.",
        BackupEventData,
        _example("success", verified_at="2026-01-04T04:00:41Z", restore_seconds=41.2),
    ),
    EventType(
        "backup.verification_failed",
        "A restore drill failed: the backup is marked unverifiable.",
        BackupEventData,
        _example("unverifiable", error="row counts differ: public.orders 1200 != 1187"),
    ),
    EventType(
        "backup.deleted",
        "A backup's stored object was deleted (retention or an admin).",
        BackupEventData,
        _example("deleted"),
    ),
    EventType(
        "restore.started",
        "A restore was requested and queued (a safety backup of the target comes first).",
        RestoreEventData,
        {**_RESTORE_EXAMPLE, "status": "queued", "restore_seconds": None},
    ),
    EventType(
        "restore.succeeded",
        "A restore replaced its target database and the services are healthy.",
        RestoreEventData,
        _RESTORE_EXAMPLE,
    ),
    EventType(
        "restore.failed",
        "A restore failed; the target database was left as it was unless stated.",
        RestoreEventData,
        {
            **_RESTORE_EXAMPLE,
            "status": "failure",
            "failure_type": "/problems/safety-backup-failed",
            "pre_restore_backup_id": None,
            "restore_seconds": None,
            "error": "restore_safety_backup: the safety backup failed: disk full",
        },
    ),
    EventType(
        "restore.cancelled",
        "A restore was cancelled; services it stopped were started again.",
        RestoreEventData,
        {
            **_RESTORE_EXAMPLE,
            "status": "cancelled",
            "failure_type": "/problems/cancelled",
            "restore_seconds": None,
            "error": "cancelled while running",
        },
    ),
)
