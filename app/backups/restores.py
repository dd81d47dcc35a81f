"""Restores: a backup written back over its target database, as a run of kind
``restore`` (admins only).

A restore is refused unless the caller typed the target database's name
(``confirm``), the backup was stored and read back (``success``; a backup whose drill
failed only with ``force`` and a reason), and it is a backup of an environment's
database (the control plane's own is restored offline: restoring it online would
overwrite the audit trail of the restore itself).

Its run and its :class:`~app.backups.models.Restore` row are written in one transaction;
the row's partial unique index lets one restore per target be active at a time, across
every API process (the database refuses the second insert). The steps are in
:mod:`app.backups.restore_actions`; the kind's finish hook (:func:`on_finish`) ends the
row and releases the target in the transaction that ends the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.auth.roles import Role
from app.auth.scope import readable
from app.backups import service as backup_service
from app.backups.events import restore_data, restore_fields
from app.backups.models import Backup, BackupStatus, Restore
from app.backups.restore_schemas import RestoreCreate
from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.core.errors import AppError, NotFound, ValidationFailed
from app.core.pagination import CursorParams, paginate
from app.core.redaction import redact_text
from app.environments.models import Environment, Service
from app.outbox.service import add_event
from app.runs import service as run_service
from app.runs.kinds import Ending, Summary
from app.runs.models import Phase, Run, RunKind, RunStatus, Step, StepStatus
from app.runs.service import StepSpec

ACTOR = Principal.system("restore", Role.ADMIN)  # who audits the steps of a restore
CONTROL_PLANE = "-"  # the environment part of the control plane's own target
SHORT_TIMEOUT = 120.0
SERVICE_TIMEOUT = 60.0  # per service, to stop or start it


class BackupNotFound(NotFound):
    type = "/problems/backup-not-found"
    title = "Backup not found"


class RestoreNotFound(NotFound):
    type = "/problems/restore-not-found"
    title = "Restore not found"


class BackupNotRestorable(AppError):
    type = "/problems/backup-not-restorable"
    title = "Backup cannot be restored"
    status = 409


class BackupUnverifiable(AppError):
    type = "/problems/backup-unverifiable"
    title = "Backup failed its restore drill"
    status = 409


class ControlPlaneRestore(AppError):
    type = "/problems/control-plane-restore"
    title = "The control plane's own database is restored offline"
    status = 409


class RestoreTargetUnavailable(AppError):
    type = "/problems/restore-target-unavailable"
    title = "The restore target is not available"
    status = 409


class RestoreInProgress(AppError):
    type = "/problems/restore-in-progress"
    title = "A restore of this database is in progress"
    status = 409


PROBLEMS = (
    BackupNotFound,
    BackupNotRestorable,
    BackupUnverifiable,
    ControlPlaneRestore,
    RestoreTargetUnavailable,
    RestoreInProgress,
)

# How a failed restore step is named in the run's failure (problem types).
STEP_PROBLEMS = {
    "restore_check": "/problems/backup-changed",
    "restore_safety_backup": "/problems/safety-backup-failed",
    "restore_stop_services": "/problems/services-not-stopped",
    "restore_database": "/problems/restore-failed",
    "restore_start_services": "/problems/services-not-started",
    "restore_verify_health": "/problems/health-check-failed",
}
TITLES = {
    "/problems/backup-changed": "The stored backup changed",
    "/problems/safety-backup-failed": "The safety backup failed",
    "/problems/services-not-stopped": "Services could not be stopped",
    "/problems/restore-failed": "The restore failed",
    "/problems/services-not-started": "Services could not be started again",
    "/problems/health-check-failed": "Health check failed",
}


def target_of(environment: str | None, database: str) -> str:
    return f"{environment or CONTROL_PLANE}/{database}"


def _field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        message, errors=[{"loc": ["body", field], "msg": message, "type": "value_error"}]
    )


@dataclass(frozen=True)
class Planned:
    backup: Backup
    environment: Environment
    services: list[Service]
    steps: list[StepSpec]


def service_params(service: Service) -> dict[str, Any]:
    return {
        "environment": service.environment,
        "name": service.name,
        "driver": service.driver,
        "config": service.config,
        "health_url": service.health_url,
        "health_timeout_seconds": service.health_timeout_seconds,
    }


def steps_for(
    backup: Backup, environment: Environment, services: list[Service], *, long_timeout: float
) -> list[StepSpec]:
    """The runbook's restore, in order; the services are started again (``rollback``
    phase) whenever the run stops after stopping them: a failed restore, a cancellation,
    a worker that died. ``long_timeout`` bounds the steps that read or write a whole
    database."""
    ordered = sorted(services, key=lambda s: (s.deploy_order, s.name))
    params = [service_params(s) for s in ordered]
    env = environment.name
    start_timeout = SHORT_TIMEOUT + sum(SERVICE_TIMEOUT + s.health_timeout_seconds for s in ordered)
    return [
        StepSpec(
            "check the backup's bytes",
            "restore_check",
            {"backup_id": backup.id},
            timeout_seconds=long_timeout,
        ),
        StepSpec(
            f"back up {backup.database} first",
            "restore_safety_backup",
            {"environment": env},
            timeout_seconds=long_timeout,
        ),
        StepSpec(
            "stop the application services",
            "restore_stop_services",
            {"environment": env, "services": list(reversed(params))},
            timeout_seconds=SHORT_TIMEOUT + SERVICE_TIMEOUT * len(ordered),
        ),
        StepSpec(
            f"restore {backup.database}",
            "restore_database",
            {"backup_id": backup.id},
            timeout_seconds=long_timeout,
        ),
        StepSpec(
            "start the application services",
            "restore_start_services",
            {"environment": env, "services": params},
            timeout_seconds=start_timeout,
        ),
        StepSpec(
            "check the services' health",
            "restore_verify_health",
            {"environment": env, "services": params},
            timeout_seconds=SHORT_TIMEOUT + SERVICE_TIMEOUT * len(ordered),
        ),
        StepSpec(
            "start the services it stopped",
            "restore_start_services",
            {"environment": env, "services": params},
            timeout_seconds=start_timeout,
            phase=Phase.ROLLBACK,
        ),
    ]


async def plan(
    session: AsyncSession, context: AppContext, body: RestoreCreate, *, lock: bool = False
) -> Planned:
    """Check a restore request against the backup and its target; the plan it would run.
    Raises the problems of :data:`PROBLEMS` and 422s naming the field. ``lock`` (a
    restore being created): the backup's row stays locked to the end of the caller's
    transaction, so a concurrent deletion (which locks it too) waits and then sees the
    active restore."""
    backup = await session.get(Backup, body.backup_id, with_for_update=lock or None)
    if backup is None:
        raise BackupNotFound(f"No backup {body.backup_id!r}")
    if backup.environment is None:
        raise ControlPlaneRestore(
            f"Backup {backup.id} is of the control plane's own database ({backup.database}). "
            "Restoring it online would overwrite the audit trail of the restore itself. "
            "Stop the API and the workers, restore it offline with the database's own tools "
            f"(the object is {backup.storage_url}), then start them again."
        )
    if body.confirm != backup.database:
        raise _field_error(
            "confirm", "confirm must be the name of the database the backup restores over"
        )
    if body.force and not (body.reason or "").strip():
        raise _field_error("reason", "a forced restore needs a reason (it is audited)")
    if backup.status == BackupStatus.UNVERIFIABLE:
        if not body.force:
            raise BackupUnverifiable(
                f"Backup {backup.id} failed its restore drill ({redact_text(backup.error or '')})"
                ". Restore another backup, or send force=true with a reason."
            )
    elif backup.status != BackupStatus.SUCCESS:
        raise BackupNotRestorable(
            f"Backup {backup.id} is {backup.status}: only a backup stored and read back "
            "(success) can be restored"
        )
    if backup.size_bytes is None or backup.sha256 is None:
        raise BackupNotRestorable(f"Backup {backup.id} has no recorded size and SHA-256")
    environment = await session.get(Environment, backup.environment)
    if environment is None:
        raise RestoreTargetUnavailable(f"Environment {backup.environment!r} no longer exists")
    if not environment.database_url:
        raise RestoreTargetUnavailable(
            f"Environment {environment.name!r} has no database_url: nothing to restore into"
        )
    try:
        source = backup_service.source_of(context, environment.database_url)
    except backup_service.BackupError as error:
        raise RestoreTargetUnavailable(str(error)) from None
    if source.database != backup.database or source.engine != backup.engine:
        raise RestoreTargetUnavailable(
            f"Environment {environment.name!r} now names another database "
            f"({source.engine} {source.database}) than the backup's "
            f"({backup.engine} {backup.database})"
        )
    services = list(
        await session.scalars(select(Service).where(Service.environment == environment.name))
    )
    steps = run_service.validate_plan(
        context.registry,
        steps_for(
            backup,
            environment,
            services,
            long_timeout=float(context.settings.backups.timeout_seconds),
        ),
    )
    return Planned(backup, environment, services, steps)


@dataclass(frozen=True)
class Created:
    run: Run
    restore: Restore
    backup: Backup


async def create(
    uow: UnitOfWork, context: AppContext, principal: Principal, body: RestoreCreate
) -> Created:
    """The restore's run and row, its event and audit row, in the caller's transaction.
    A restore of the same target already active: :class:`RestoreInProgress` (told by the
    database's unique index, whichever API process inserted the other)."""
    planned = await plan(uow.session, context, body, lock=True)
    backup = planned.backup
    target = target_of(backup.environment, backup.database)
    await _refuse_if_active(uow.session, target)
    reason = body.reason.strip() if body.force and body.reason else None
    run = await run_service.create_run(
        uow,
        context,
        kind=RunKind.RESTORE,
        steps=planned.steps,
        params={
            "backup_id": backup.id,
            "target": target,
            "forced": body.force,
            "reason": reason,
        },
        requested_by=principal.actor,
        environment=backup.environment,
    )
    restore = Restore(
        id=run.id,
        backup_id=backup.id,
        environment=backup.environment,
        database=backup.database,
        target=target,
        active=True,
        status=RunStatus.QUEUED.value,
        forced=body.force,
        force_reason=reason,
        requested_by=principal.actor,
        created_at=run.created_at,
    )
    try:
        async with uow.session.begin_nested():
            uow.session.add(restore)
            await uow.session.flush()
    except IntegrityError:
        raise RestoreInProgress(_busy(target)) from None
    await add_event(uow.session, "restore.started", restore_data(restore, RunStatus.QUEUED.value))
    await audit_service.record(
        uow.session,
        principal,
        action="restore.create",
        resource_type="restore",
        resource_id=restore.id,
        summary={
            "backup_id": backup.id,
            "target": target,
            "forced": body.force,
            "reason": reason,
            "backup_status": backup.status,
        },
    )
    return Created(run, restore, backup)


def _busy(target: str) -> str:
    return f"A restore of {target} is in progress; wait until it ends"


async def _refuse_if_active(session: AsyncSession, target: str) -> None:
    """A quick answer for the common case (the unique index decides the race)."""
    active = await session.scalar(
        select(Restore.id).where(Restore.target == target, Restore.active.is_(True))
    )
    if active is not None:
        raise RestoreInProgress(_busy(target), extra={"restore_id": active})


# -- reading ---------------------------------------------------------------------------


async def get(session: AsyncSession, principal: Principal | None, restore_id: str) -> Restore:
    statement = readable(
        select(Restore).where(Restore.id == restore_id), Restore.environment, principal
    )
    restore = await session.scalar(statement.execution_options(populate_existing=True))
    if restore is None:
        raise RestoreNotFound(f"No restore {restore_id!r}")
    return restore


@dataclass(frozen=True)
class Filters:
    environment: str | None = None
    status: RunStatus | None = None


async def list_page(
    session: AsyncSession, principal: Principal, filters: Filters, page: CursorParams
) -> tuple[Sequence[Restore], str | None]:
    statement = readable(select(Restore), Restore.environment, principal)
    if filters.environment is not None:
        statement = statement.where(Restore.environment == filters.environment)
    if filters.status is not None:
        statement = statement.where(Restore.status == filters.status.value)
    return await paginate(session, statement, page, created_at=Restore.created_at, id=Restore.id)


async def runs_of(session: AsyncSession, ids: Sequence[str]) -> dict[str, Run]:
    """The runs behind restores, with their steps."""
    if not ids:
        return {}
    rows = await session.scalars(
        select(Run)
        .where(Run.id.in_(list(ids)))
        .options(selectinload(Run.steps))
        .execution_options(populate_existing=True)
    )
    return {r.id: r for r in rows}


# -- the run's end ---------------------------------------------------------------------


def finalize(steps: list[Step], ending: Ending) -> Summary:
    """Success when every main step succeeded; otherwise the first failure, named by its
    step. ``error`` when the services it stopped could not be started again."""
    main = [s for s in steps if s.phase != Phase.ROLLBACK]
    restart = [s for s in steps if s.phase == Phase.ROLLBACK]
    restarted = [s for s in restart if s.status == StepStatus.SUCCESS]
    not_restarted = [s for s in restart if s.status == StepStatus.FAILURE]
    result: dict[str, Any] = {"services_restarted": bool(restarted)}
    # The step that stopped the run: a step left running by a dead worker is still
    # ``in_progress`` here (the engine settled its row, not this copy).
    failed = ending.stopped_at or next((s for s in main if s.status == StepStatus.FAILURE), None)
    if ending.cancelled and failed is None:
        problem, detail = "/problems/cancelled", "cancelled while running"
    elif failed is None:
        return RunStatus.SUCCESS, None, None, result
    else:
        step_result = failed.result or {}
        if step_result.get("interrupted") or failed.status == StepStatus.IN_PROGRESS:
            problem = "/problems/interrupted"
            error = "its worker stopped while it ran, and it is not safe to run twice"
        elif step_result.get("timeout"):
            problem, error = "/problems/timeout", failed.error or "timed out"
        else:
            problem = STEP_PROBLEMS.get(failed.action, "/problems/step-failed")
            error = failed.error or "failed"
        detail = f"{failed.action}: {error}"
    if not_restarted:
        errors = "; ".join(s.error or "failed" for s in not_restarted)
        return (
            RunStatus.ERROR,
            problem,
            f"{detail}; the services it stopped could not all be started again: {errors}",
            result,
        )
    if ending.cancelled:
        return RunStatus.CANCELLED, problem, detail, result
    return RunStatus.FAILURE, problem, detail, result


def compensate(run: Run, ending: Ending) -> bool:
    """Whatever stopped the run, the services it stopped are started again (the step
    does nothing when none was stopped)."""
    return True


async def on_finish(uow: UnitOfWork, context: AppContext, run: Run) -> dict[str, Any] | None:
    """In the transaction that ends the run: the restore's status, the release of its
    target, the safety backup settled if the run ended while it ran, and an audit row;
    returns what the run's end announcement (``restore.<succeeded|failed|cancelled>``)
    adds."""
    restore = await uow.session.get(Restore, run.id, with_for_update=True)
    if restore is None:
        return None
    restore.status = run.status
    restore.active = False
    restore.finished_at = run.finished_at or utcnow()
    await backup_service.settle_interrupted(uow, context, run)
    error = redact_text(run.failure_detail)[:2000] if run.failure_detail else None
    await audit_service.record(
        uow.session,
        ACTOR,
        action=f"restore.{run_service.past_tense(RunStatus(run.status))}",
        resource_type="restore",
        resource_id=restore.id,
        summary={
            "target": restore.target,
            "backup_id": restore.backup_id,
            "status": run.status,
            "pre_restore_backup_id": restore.pre_restore_backup_id,
            "restore_seconds": restore.restore_seconds,
            "error": error,
        },
    )
    await uow.session.flush()
    return restore_fields(restore, error)
