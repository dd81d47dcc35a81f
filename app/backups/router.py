"""``/v1/backups``: take one (of an environment's database or of the control plane's
own), list and read them, verify one by a restore drill, delete one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.auth.deps import Admin, Operator, Viewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.backups import operations, presenters, retention
from app.backups.models import BackupOrigin, BackupStatus
from app.backups.schemas import (
    BackupCreate,
    BackupId,
    BackupList,
    BackupOut,
    BackupPlan,
    target_of,
)
from app.core.deps import ContextDep, CursorParamsDep, SessionDep, UnitOfWorkDep
from app.core.errors import problem_responses
from app.core.paths import V1
from app.core.schemas import PRINTABLE
from app.environments.schemas import NAME
from app.environments.service import EnvironmentNotFound
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.runs.http import PreferHeader, created, run_response
from app.runs.schemas import RunOut

router = APIRouter(prefix=f"{V1}/backups", tags=["backups"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)


@router.post(
    "",
    status_code=202,
    operation_id="createBackup",
    summary="Take a backup",
    response_model=BackupOut,
    responses={
        200: {"model": BackupPlan, "description": "The plan of a dry run; nothing written."},
        201: {"model": BackupOut, "description": "With `Prefer: wait`: the finished backup."},
        **problem_responses(
            *AUTH_ERRORS,
            *IDEMPOTENCY_ERRORS,
            EnvironmentNotFound,
            operations.NoDatabase,
            validation=True,
        ),
    },
)
async def create_backup(
    body: BackupCreate,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Dumps an environment's database (its `database_url`) or, with `self: true`, the
    control plane's own, stores it, reads it back and compares size and SHA-256 (a run of
    kind `backup`, whose id is the backup's). 202 + `Location`; with `Prefer: wait=N`,
    the finished backup (201). An environment without `database_url` is a 409
    `no-database`."""
    environment = target_of(body)
    if body.dry_run:
        async with context.sessionmaker() as session:
            target = await operations.resolve(session, context, environment)
        plan = presenters.plan_out(operations.plan(context, target))
        return JSONResponse(plan.model_dump(mode="json"), status_code=200)
    async with uow:
        await idem.claim(uow)
        run, backup = await operations.create_backup(uow, context, principal, environment)
        accepted = presenters.answer(backup, 202, {"Retry-After": "2"})
        await idem.complete(uow.session, accepted)
    return await created(
        context,
        principal,
        run.id,
        accepted,
        location=presenters.location(run.id),
        prefer=prefer,
        idem=idem,
        render=presenters.renderer(context),
    )


@router.get(
    "",
    operation_id="listBackups",
    summary="List backups",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_backups(
    principal: Viewer,
    session: SessionDep,
    page: CursorParamsDep,
    environment: Annotated[str | None, Query(pattern=NAME, max_length=63)] = None,
    database: Annotated[str | None, Query(pattern=PRINTABLE, max_length=200)] = None,
    status: BackupStatus | None = None,
    origin: BackupOrigin | None = None,
    verified: Annotated[
        bool | None, Query(description="Only those whose restore drill passed (or not).")
    ] = None,
    self_: Annotated[
        bool | None,
        Query(alias="self", description="Only the control plane's own backups (or none)."),
    ] = None,
) -> BackupList:
    """Newest first; deleted backups stay listed (`status: deleted`)."""
    rows, next_cursor = await operations.list_page(
        session,
        operations.Filters(environment, database, status, origin, verified, self_),
        page,
    )
    return BackupList(items=[presenters.backup_out(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{backup_id}",
    operation_id="getBackup",
    summary="Get a backup",
    responses=problem_responses(*AUTH_ERRORS, operations.BackupNotFound, validation=True),
)
async def get_backup(principal: Viewer, session: SessionDep, backup_id: BackupId) -> BackupOut:
    return presenters.backup_out(await operations.get(session, backup_id))


@router.post(
    "/{backup_id}/verify",
    status_code=202,
    operation_id="verifyBackup",
    summary="Verify a backup by a restore drill",
    response_model=RunOut,
    responses={
        201: {"model": RunOut, "description": "With `Prefer: wait`: the finished run."},
        **problem_responses(
            *AUTH_ERRORS,
            *IDEMPOTENCY_ERRORS,
            operations.BackupNotFound,
            operations.NotVerifiable,
            validation=True,
        ),
    },
)
async def verify_backup(
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    backup_id: BackupId,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Re-hashes the stored object, then restores it into a scratch database beside its
    target, compares the row counts recorded at backup time and runs the environment's
    `backup_smoke_queries` (a run of kind `backup_verification`; `Location` is the run).
    Passed: the backup gets `verified_at` and `restore_seconds`; failed: it is
    `unverifiable` and an incident opens. A backup that is not `success` or
    `unverifiable` is a 409."""
    async with uow:
        await idem.claim(uow)
        run = await operations.create_verification(uow, context, principal, backup_id)
        where = f"{V1}/runs/{run.id}"
        accepted = run_response(run, 202, where, **{"Retry-After": "2"})
        await idem.complete(uow.session, accepted)
    return await created(
        context, principal, run.id, accepted, location=where, prefer=prefer, idem=idem
    )


@router.delete(
    "/{backup_id}",
    operation_id="deleteBackup",
    summary="Delete a backup",
    responses=problem_responses(
        *AUTH_ERRORS,
        operations.BackupNotFound,
        retention.NewestVerifiedBackup,
        retention.BackupInProgress,
        retention.BackupInUse,
        retention.StorageUnavailable,
        validation=True,
    ),
)
async def delete_backup(
    principal: Admin, context: ContextDep, uow: UnitOfWorkDep, backup_id: BackupId
) -> BackupOut:
    """Deletes the stored object; the backup stays listed as `deleted`. The newest
    verified backup of its database (409 `newest-verified-backup`), one still being
    taken (409) and one an active restore writes back (409 `backup-in-use`) are refused."""
    async with uow:
        backup = await retention.delete_by_id(uow, context, backup_id, principal)
        if backup is None:
            raise operations.BackupNotFound(f"No backup {backup_id!r}")
        out = presenters.backup_out(backup)
    return out
