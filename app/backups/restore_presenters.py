"""Restores as clients see them: the row, with the steps and failure of its run."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.backups import restores
from app.backups.models import Backup, Restore
from app.backups.restore_schemas import (
    RestoredBackup,
    RestoreDryRun,
    RestoreLinks,
    RestoreOut,
)
from app.core.context import AppContext
from app.core.paths import V1
from app.core.redaction import redact_text
from app.runs.models import Run, RunStatus
from app.runs.presenters import plan_view, step_out
from app.runs.schemas import FAILURE_TITLES, PlannedStep, RunFailure


def location(restore_id: str) -> str:
    return f"{V1}/restores/{restore_id}"


def restore_out(restore: Restore, run: Run | None, backup: Backup | None) -> RestoreOut:
    failure = (
        RunFailure(
            type=run.failure_type,
            title=restores.TITLES.get(run.failure_type)
            or FAILURE_TITLES.get(run.failure_type, "Restore did not succeed"),
            detail=redact_text(run.failure_detail) if run.failure_detail else None,
        )
        if run is not None and run.failure_type
        else None
    )
    # The run's status while it runs (the row's says queued until it ends); the row's
    # once it ended.
    status = run.status if run is not None and restore.active else restore.status
    return RestoreOut(
        id=restore.id,
        backup_id=restore.backup_id,
        backup=RestoredBackup(
            id=backup.id,
            status=backup.status,
            created_at=backup.created_at,
            size_bytes=backup.size_bytes,
            sha256=backup.sha256,
        )
        if backup is not None
        else None,
        environment=restore.environment,
        database=restore.database,
        target=restore.target,
        status=RunStatus(status),
        active=restore.active,
        forced=restore.forced,
        reason=restore.force_reason,
        pre_restore_backup_id=restore.pre_restore_backup_id,
        restore_seconds=restore.restore_seconds,
        failure=failure,
        requested_by=restore.requested_by,
        created_at=restore.created_at,
        started_at=run.started_at if run is not None else None,
        finished_at=restore.finished_at,
        cancel_requested=run is not None and run.cancel_requested_at is not None,
        steps=[step_out(s) for s in sorted(run.steps, key=lambda s: s.position)] if run else [],
        links=RestoreLinks(
            self=location(restore.id),
            run=f"{V1}/runs/{restore.id}",
            events=f"{V1}/runs/{restore.id}/events",
            backup=f"{V1}/backups/{restore.backup_id}",
        ),
    )


async def restores_out(session: AsyncSession, rows: Sequence[Restore]) -> list[RestoreOut]:
    runs = await restores.runs_of(session, [r.id for r in rows])
    ids = list({r.backup_id for r in rows})
    backups = (
        {b.id: b for b in await session.scalars(select(Backup).where(Backup.id.in_(ids)))}
        if ids
        else {}
    )
    return [restore_out(r, runs.get(r.id), backups.get(r.backup_id)) for r in rows]


def renderer(context: AppContext):  # type: ignore[no-untyped-def]
    """The ``Prefer: wait`` answer of a restore (for :func:`app.runs.http.created`)."""

    async def render(run: Run, status: int, where: str, headers: dict[str, str]) -> JSONResponse:
        async with context.sessionmaker() as session:
            restore = await restores.get(session, None, run.id)
            (out,) = await restores_out(session, [restore])
        return JSONResponse(
            out.model_dump(mode="json"), status_code=status, headers={"Location": where, **headers}
        )

    return render


def dry_run_out(planned: restores.Planned, forced: bool, *, reveal: bool) -> RestoreDryRun:
    backup = planned.backup
    return RestoreDryRun(
        backup_id=backup.id,
        target=restores.target_of(backup.environment, backup.database),
        forced=forced,
        steps=[PlannedStep(**step) for step in plan_view(planned.steps, reveal=reveal)],
    )
