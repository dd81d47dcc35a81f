"""Backups as clients see them."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from app.backups.models import Backup, BackupOrigin, BackupStatus
from app.backups.operations import Plan, get
from app.backups.schemas import BackupLinks, BackupOut, BackupPlan
from app.core.context import AppContext
from app.core.paths import V1
from app.core.redaction import redact_text, redact_value
from app.runs.models import Run


def location(backup_id: str) -> str:
    return f"{V1}/backups/{backup_id}"


def backup_out(backup: Backup) -> BackupOut:
    return BackupOut(
        id=backup.id,
        run_id=backup.run_id,
        origin=BackupOrigin(backup.origin),
        environment=backup.environment,
        database=backup.database,
        engine=backup.engine,
        format=backup.format,
        status=BackupStatus(backup.status),
        storage_url=redact_text(backup.storage_url),
        object_key=backup.object_key,
        size_bytes=backup.size_bytes,
        sha256=backup.sha256,
        row_counts=dict(backup.row_counts or {}),
        duration_seconds=backup.duration_seconds,
        error=redact_text(backup.error) if backup.error else None,
        created_at=backup.created_at,
        finished_at=backup.finished_at,
        verified_at=backup.verified_at,
        restore_seconds=backup.restore_seconds,
        verification=redact_value(backup.verification) if backup.verification else None,
        verification_run_id=backup.verification_run_id,
        deleted_at=backup.deleted_at,
        deleted_by=backup.deleted_by,
        links=BackupLinks(
            self=location(backup.id),
            run=f"{V1}/runs/{backup.run_id}",
            events=f"{V1}/runs/{backup.run_id}/events",
            verification_run=f"{V1}/runs/{backup.verification_run_id}"
            if backup.verification_run_id
            else None,
        ),
    )


def answer(backup: Backup, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        backup_out(backup).model_dump(mode="json"),
        status_code=status,
        headers={"Location": location(backup.id), **(headers or {})},
    )


def plan_out(plan: Plan) -> BackupPlan:
    return BackupPlan(
        environment=plan.environment,
        database=plan.database,
        engine=plan.engine,
        format=plan.format,
        object_key=plan.object_key,
        storage_url=redact_text(plan.storage_url),
    )


def renderer(context: AppContext):  # type: ignore[no-untyped-def]
    """The ``Prefer: wait`` answer of a backup: the backup as its run left it."""

    async def render(run: Run, status: int, where: str, headers: dict[str, str]) -> JSONResponse:
        async with context.sessionmaker() as session:
            backup = await get(session, run.id)
        return answer(backup, status, headers)

    return render
