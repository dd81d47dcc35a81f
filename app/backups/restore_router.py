"""``/v1/restores``: a backup written back over its environment's database (admins
only), its list and its record."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from app.auth.deps import Admin, ScopedViewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.backups import restore_presenters as presenters
from app.backups import restores
from app.backups.restore_schemas import RestoreCreate, RestoreDryRun, RestoreList, RestoreOut
from app.core.deps import ContextDep, CursorParamsDep, SessionDep, UnitOfWorkDep
from app.core.errors import problem_responses
from app.core.paths import V1
from app.core.schemas import PRINTABLE
from app.environments.schemas import NAME
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.runs.http import PreferHeader, created
from app.runs.models import RunStatus

router = APIRouter(prefix=f"{V1}/restores", tags=["restores"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
RestoreId = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE)]


@router.post(
    "",
    status_code=202,
    operation_id="createRestore",
    summary="Restore a backup over its database",
    response_model=RestoreOut,
    responses={
        200: {"model": RestoreDryRun, "description": "A dry run: the checks passed; nothing ran."},
        201: {"model": RestoreOut, "description": "With `Prefer: wait`: the finished one."},
        **problem_responses(*AUTH_ERRORS, *IDEMPOTENCY_ERRORS, *restores.PROBLEMS, validation=True),
    },
)
async def create_restore(
    body: RestoreCreate,
    principal: Admin,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Queues a restore of an environment's database from one of its backups (202 +
    `Location`); with `Prefer: wait=N`, the finished restore (201). `confirm` must be the
    database's name. Its steps: re-hash the stored backup, take a safety backup of the
    database, stop the environment's services, restore (into a scratch database first:
    the target is replaced only when the row counts and smoke queries pass), start the
    services again (also when a step failed) and check their health.

    Refused: a backup not stored and read back (409 `backup-not-restorable`), one whose
    restore drill failed unless `force` with a `reason` (409 `backup-unverifiable`), a
    backup of the control plane itself (409 `control-plane-restore`: restore it offline),
    and a second restore of a database while one is active (409 `restore-in-progress`)."""
    if body.dry_run:
        async with context.sessionmaker() as session:
            planned = await restores.plan(session, context, body)
        dry = presenters.dry_run_out(planned, body.force, reveal=True)
        return JSONResponse(dry.model_dump(mode="json"), status_code=200)
    async with uow:
        await idem.claim(uow)
        new = await restores.create(uow, context, principal, body)
        out = presenters.restore_out(new.restore, new.run, new.backup)
        where = presenters.location(new.run.id)
        accepted = JSONResponse(
            out.model_dump(mode="json"),
            status_code=202,
            headers={"Location": where, "Retry-After": "2"},
        )
        await idem.complete(uow.session, accepted)
    return await created(
        context,
        principal,
        new.run.id,
        accepted,
        location=where,
        prefer=prefer,
        idem=idem,
        render=presenters.renderer(context),
    )


@router.get(
    "",
    operation_id="listRestores",
    summary="List restores",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_restores(
    principal: ScopedViewer,
    session: SessionDep,
    page: CursorParamsDep,
    environment: Annotated[str | None, Query(pattern=NAME, max_length=63)] = None,
    status: RunStatus | None = None,
) -> RestoreList:
    """Newest first."""
    rows, next_cursor = await restores.list_page(
        session, principal, restores.Filters(environment, status), page
    )
    return RestoreList(items=await presenters.restores_out(session, rows), next_cursor=next_cursor)


@router.get(
    "/{restore_id}",
    operation_id="getRestore",
    summary="Get a restore with its steps",
    responses=problem_responses(*AUTH_ERRORS, restores.RestoreNotFound, validation=True),
)
async def get_restore(
    principal: ScopedViewer, session: SessionDep, restore_id: RestoreId
) -> RestoreOut:
    restore = await restores.get(session, principal, restore_id)
    (out,) = await presenters.restores_out(session, [restore])
    return out
