"""The step actions of backups (take one; re-hash one; restore one into a scratch
database) and what the ends of ``backup`` and ``backup_verification`` runs change."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy import select

from app.audit import service as audit_service
from app.backups import pipeline, service
from app.backups.events import backup_data
from app.backups.models import Backup, BackupStatus
from app.backups.sources import SourceError
from app.backups.storage import StorageError
from app.backups.stream import CorruptError
from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.core.paths import V1
from app.core.redaction import redact_text
from app.outbox.service import add_event
from app.runs.actions import Params, StepContext, StepOutcome
from app.runs.models import Run, RunStatus, Step, StepStatus

ID = r"^[0-9A-Za-z_-]{1,36}$"
DRILL_ERRORS = (SourceError, StorageError, CorruptError, pipeline.ReadBackMismatch)


class BackupTakeParams(Params):
    backup_id: str | None = Field(
        default=None, pattern=ID, description="The backup row to fill; default: the run's id."
    )


class BackupRef(Params):
    backup_id: str = Field(pattern=ID)


def _taken(backup: Backup) -> dict[str, Any]:
    return {
        "backup_id": backup.id,
        "size_bytes": backup.size_bytes,
        "sha256": backup.sha256,
        "storage_url": backup.storage_url,
    }


async def backup_take(params: BackupTakeParams, ctx: StepContext) -> StepOutcome:
    """Dump, store and read back the backup :func:`app.backups.service.prepare` wrote.
    Not idempotent: a worker that died here leaves the run failed (and the backup failed
    by the kind's finish hook), never a second dump under the same key."""
    backup_id = params.backup_id or ctx.run_id
    backup = await service.perform(ctx.context, backup_id, ctx.log)
    if backup.status == BackupStatus.SUCCESS:
        return StepOutcome(
            StepStatus.SUCCESS,
            f"stored {backup.size_bytes} bytes at {backup.storage_url}",
            data=_taken(backup),
        )
    return StepOutcome(
        StepStatus.FAILURE,
        f"backup {backup.id} failed",
        data=_taken(backup),
        error=backup.error or "the backup failed",
    )


async def _load(context: AppContext, backup_id: str) -> Backup | None:
    async with context.sessionmaker() as session:
        return await session.get(Backup, backup_id)


async def backup_checksum(params: BackupRef, ctx: StepContext) -> StepOutcome:
    """Read the stored object in full; its size and SHA-256 must be those recorded."""
    backup = await _load(ctx.context, params.backup_id)
    if backup is None or backup.size_bytes is None or backup.sha256 is None:
        return StepOutcome(StepStatus.FAILURE, error=f"backup {params.backup_id} stored nothing")
    data = {"backup_id": backup.id, "size_bytes": backup.size_bytes, "sha256": backup.sha256}
    try:
        where = service.storage(ctx.context)
        await pipeline.verify_object(where, backup.object_key, backup.size_bytes, backup.sha256)
    except (StorageError, pipeline.ReadBackMismatch) as error:
        return StepOutcome(StepStatus.FAILURE, data=data, error=redact_text(str(error)))
    return StepOutcome(
        StepStatus.SUCCESS, f"{backup.size_bytes} bytes, SHA-256 {backup.sha256}: match", data=data
    )


async def backup_drill(params: BackupRef, ctx: StepContext) -> StepOutcome:
    """Restore the backup into a scratch database beside its target, compare the row
    counts recorded at backup time, run the environment's smoke queries, time it."""
    context = ctx.context
    backup = await _load(context, params.backup_id)
    if backup is None or backup.size_bytes is None or backup.sha256 is None:
        return StepOutcome(StepStatus.FAILURE, error=f"backup {params.backup_id} stored nothing")
    try:
        async with context.sessionmaker() as session:
            environment = await service.target_environment(session, backup.environment)
        smoke = list(environment.backup_smoke_queries or []) if environment else []
        source = service.source_of(context, service.database_url(context, environment))
        drilled = await pipeline.drill(
            source,
            service.storage(context),
            backup.object_key,
            size=backup.size_bytes,
            sha256=backup.sha256,
            row_counts=dict(backup.row_counts or {}),
            smoke_queries=smoke,
            log=ctx.log,
        )
    except service.BackupError as error:
        return StepOutcome(StepStatus.FAILURE, error=redact_text(str(error)))
    except DRILL_ERRORS as error:
        return StepOutcome(StepStatus.FAILURE, error=redact_text(str(error)))
    data = {
        "backup_id": backup.id,
        "restore_seconds": round(drilled.restore_seconds, 3),
        "row_counts": drilled.row_counts,
        "mismatches": drilled.mismatches,
        "smoke": drilled.smoke,
    }
    if drilled.passed:
        return StepOutcome(
            StepStatus.SUCCESS,
            f"restored in {drilled.restore_seconds:.2f} s; {len(drilled.row_counts)} tables "
            f"matched, {len(drilled.smoke)} smoke queries passed",
            data=data,
        )
    failed = [str(s.get("query")) for s in drilled.smoke if not s.get("ok")]
    reasons = [
        f"{table}: {counts['restored']} rows restored, {counts['expected']} backed up"
        for table, counts in sorted(drilled.mismatches.items())
    ] + [f"smoke query failed: {query}" for query in failed]
    return StepOutcome(StepStatus.FAILURE, data=data, error="; ".join(reasons)[:2000])


# -- the ends of runs ----------------------------------------------------------------


def backup_links(backup_id: str, run_id: str) -> dict[str, str]:
    return {"self": f"{V1}/backups/{backup_id}", "run": f"{V1}/runs/{run_id}"}


async def backup_finished(uow: UnitOfWork, context: AppContext, run: Run) -> dict[str, Any]:
    """A backup run that ended while its backup was still ``in_progress`` (killed,
    cancelled, timed out) leaves it ``failure``."""
    await service.settle_interrupted(uow, context, run)
    return {"links": backup_links(run.id, run.id)}


async def verification_finished(
    uow: UnitOfWork, context: AppContext, run: Run
) -> dict[str, Any] | None:
    """A drill that passed marks the backup verified (time, restore time, summary); one
    that failed (a changed byte, a failed restore, counts or smoke queries) marks it
    ``unverifiable``. A cancelled one changes nothing."""
    backup_id = str((run.params or {}).get("backup_id") or "")
    session = uow.session
    backup = await session.get(Backup, backup_id, with_for_update=True)
    if backup is None or backup.status not in (
        BackupStatus.SUCCESS.value,
        BackupStatus.UNVERIFIABLE.value,
    ):
        return None
    links = backup_links(backup.id, run.id)
    if run.status not in (RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.ERROR):
        return {"links": links}
    steps = {
        step.action: step
        for step in await session.scalars(select(Step).where(Step.run_id == run.id))
    }
    drill = steps.get("backup_drill")
    checksum = steps.get("backup_checksum")
    result = dict((drill.result or {}) if drill else {})
    summary: dict[str, Any] = {
        "run_id": run.id,
        "passed": run.status == RunStatus.SUCCESS,
        "checksum": checksum.status if checksum else None,
        "restore_seconds": result.get("restore_seconds"),
        "row_counts": result.get("row_counts", {}),
        "mismatches": result.get("mismatches", {}),
        "smoke": result.get("smoke", []),
    }
    now = utcnow()
    if run.status == RunStatus.SUCCESS:
        backup.status = BackupStatus.SUCCESS.value
        backup.verified_at = now
        backup.restore_seconds = result.get("restore_seconds")
        backup.error = None
        event, action = "backup.verified", "backup.verified"
    else:
        failed = next(
            (s for s in (checksum, drill) if s is not None and s.status == StepStatus.FAILURE),
            None,
        )
        reason = (failed.error if failed else None) or run.failure_detail or "the drill failed"
        summary["error"] = redact_text(reason)[:2000]
        backup.status = BackupStatus.UNVERIFIABLE.value
        backup.error = summary["error"]
        event, action = "backup.verification_failed", "backup.verification_failed"
    backup.verification = summary
    backup.verification_run_id = run.id
    await session.flush()
    if event == "backup.verified":
        await add_event(session, "backup.verified", backup_data(backup))
    else:
        await add_event(session, "backup.verification_failed", backup_data(backup))
    await audit_service.record(
        session,
        service.ACTOR,
        action=action,
        resource_type="backup",
        resource_id=backup.id,
        summary={
            "run_id": run.id,
            "restore_seconds": backup.restore_seconds,
            "error": backup.error,
        },
    )
    return {"links": links}
