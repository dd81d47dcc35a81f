"""``/v1/runbooks``: the catalog, and starting a runbook's run."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from app.auth import service as auth_service
from app.auth.deps import ScopedDeployer, Viewer, request_info
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.auth.roles import Role
from app.core.deps import ContextDep, UnitOfWorkDep
from app.core.errors import problem_responses
from app.core.paths import V1
from app.environments.service import EnvironmentNotFound
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.runbooks import presenters, service
from app.runbooks.catalog import catalog_of
from app.runbooks.schemas import (
    RunbookDryRun,
    RunbookList,
    RunbookOut,
    RunbookRunCreate,
)
from app.runbooks.spec import NAME_PATTERN
from app.runs.http import PreferHeader, created, run_response
from app.runs.presenters import plan_view
from app.runs.schemas import PlannedStep, RunOut

router = APIRouter(prefix=f"{V1}/runbooks", tags=["runbooks"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
RunbookName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63)]


def _location(run_id: str) -> str:
    return f"{V1}/runs/{run_id}"


@router.get(
    "",
    operation_id="listRunbooks",
    summary="List the runbook catalog",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_runbooks(
    principal: Viewer,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=63)] = None,
    kind: Annotated[Literal["maintenance", "playbook"] | None, Query()] = None,
) -> RunbookList:
    """Every runbook in name order; `cursor` is the `next_cursor` of the previous page."""
    runbooks = [
        r
        for r in catalog_of(context).runbooks()
        if (cursor is None or r.name > cursor) and (kind is None or r.spec.kind == kind)
    ]
    page = runbooks[:limit]
    next_cursor = page[-1].name if len(runbooks) > limit else None
    return RunbookList(items=[presenters.summary(r) for r in page], next_cursor=next_cursor)


@router.get(
    "/{name}",
    operation_id="getRunbook",
    summary="Get a runbook: its parameters' schema and its steps",
    responses=problem_responses(*AUTH_ERRORS, service.RunbookNotFound, validation=True),
)
async def get_runbook(principal: Viewer, context: ContextDep, name: RunbookName) -> RunbookOut:
    return presenters.detail(service.get_runbook(context, name))


@router.post(
    "/{name}/runs",
    status_code=202,
    operation_id="startRunbookRun",
    summary="Run a runbook",
    response_model=RunOut,
    responses={
        200: {"model": RunbookDryRun, "description": "The plan of a dry run; nothing executed."},
        201: {"model": RunOut, "description": "With `Prefer: wait`: the finished run."},
        **problem_responses(
            *AUTH_ERRORS,
            *IDEMPOTENCY_ERRORS,
            service.RunbookNotFound,
            EnvironmentNotFound,
            validation=True,
        ),
    },
)
async def start_runbook_run(
    request: Request,
    principal: ScopedDeployer,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    name: RunbookName,
    prefer: PreferHeader = None,
    body: RunbookRunCreate | None = None,
) -> JSONResponse:
    """Needs the runbook's `role`. Parameters are checked against its schema (422 naming
    each bad one). 202 with the queued run (`Location: /v1/runs/{id}`); with
    `Prefer: wait=N`, the finished run; with `dry_run`, the resolved plan."""
    body = body or RunbookRunCreate()
    runbook = service.get_runbook(context, name)
    # The runbook's own role, checked like a route's (a denial is audited).
    await auth_service.require(
        context, principal, runbook.role, request_info(request), environment_scoped=True
    )
    if body.dry_run:
        async with context.sessionmaker() as session:
            _, values, planned = await service.prepare(
                session, context, principal, name, body.parameters
            )
        steps = plan_view(planned, reveal=principal.role == Role.ADMIN)
        dry = RunbookDryRun(
            kind=service.kind_of(runbook),
            steps=[PlannedStep(**s) for s in steps],
            runbook=runbook.name,
            parameters=values,
        )
        return JSONResponse(dry.model_dump(mode="json"), status_code=200)
    async with uow:
        await idem.claim(uow)
        run = await service.start_run(uow, context, principal, name, body.parameters)
        accepted = run_response(run, 202, _location(run.id), **{"Retry-After": "1"})
        await idem.complete(uow.session, accepted)
    return await created(
        context, principal, run.id, accepted, location=_location(run.id), prefer=prefer, idem=idem
    )
