"""``/v1/health-checks``: the runbook's daily health check, on demand."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.auth.deps import Operator, Viewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.auth.roles import Role
from app.core.deps import ContextDep, CursorParamsDep, SessionDep, UnitOfWorkDep
from app.core.errors import problem_responses
from app.core.paths import V1
from app.health_checks import service
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.runs import service as run_service
from app.runs.http import PreferHeader, created, run_response
from app.runs.models import RunKind
from app.runs.presenters import plan_view, run_out
from app.runs.router import RunId
from app.runs.schemas import DryRun, PlannedStep, RunCreate, RunList, RunOut

router = APIRouter(prefix=f"{V1}/health-checks", tags=["health checks"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)


def _location(run_id: str) -> str:
    return f"{V1}/health-checks/{run_id}"


@router.post(
    "",
    status_code=202,
    operation_id="createHealthCheck",
    summary="Run the health check",
    response_model=RunOut,
    responses={
        200: {"model": DryRun, "description": "The plan of a dry run; nothing executed."},
        201: {"model": RunOut, "description": "With `Prefer: wait`: the finished run."},
        **problem_responses(
            *AUTH_ERRORS,
            *IDEMPOTENCY_ERRORS,
            validation=True,
        ),
    },
)
async def create_health_check(
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    prefer: PreferHeader = None,
    body: RunCreate | None = None,
) -> JSONResponse:
    """Probes every service, disk, memory, logs, backups, PostgreSQL and Redis against the
    runbook's thresholds. 202 with the queued run; with `Prefer: wait=N`, the finished run."""
    if body is not None and body.dry_run:
        async with context.sessionmaker() as session:
            planned = await service.steps(session, context)
        steps = plan_view(
            run_service.validate_plan(context.registry, planned),
            reveal=principal.role == Role.ADMIN,
        )
        dry = DryRun(kind=RunKind.HEALTH_CHECK, steps=[PlannedStep(**s) for s in steps])
        return JSONResponse(dry.model_dump(mode="json"), status_code=200)
    async with uow:
        await idem.claim(uow)
        run = await service.create(uow, context, principal)
        accepted = run_response(run, 202, _location(run.id), **{"Retry-After": "1"})
        await idem.complete(uow.session, accepted)
    return await created(
        context, principal, run.id, accepted, location=_location(run.id), prefer=prefer, idem=idem
    )


@router.get(
    "",
    operation_id="listHealthChecks",
    summary="List health checks",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_health_checks(
    principal: Viewer, session: SessionDep, page: CursorParamsDep
) -> RunList:
    rows, next_cursor = await run_service.list_page(
        session, run_service.RunFilters(kind=RunKind.HEALTH_CHECK), page, principal
    )
    return RunList(items=[run_out(r, _location(r.id)) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{run_id}",
    operation_id="getHealthCheck",
    summary="Get a health check",
    responses=problem_responses(*AUTH_ERRORS, run_service.RunNotFound, validation=True),
)
async def get_health_check(principal: Viewer, session: SessionDep, run_id: RunId) -> RunOut:
    run = await run_service.get_run(session, run_id, principal, kind=RunKind.HEALTH_CHECK)
    return run_out(run, _location(run.id))
