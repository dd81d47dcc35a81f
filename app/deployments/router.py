"""``/v1/deployments``: what CI calls — create (idempotent, `Prefer: wait`, dry run),
list, read, cancel, roll back, evidence."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.auth.deps import ScopedDeployer, ScopedViewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.context import AppContext
from app.core.deps import (
    ContextDep,
    CursorParamsDep,
    SessionDep,
    SharedUnitOfWorkDep,
    UnitOfWorkDep,
)
from app.core.errors import problem_responses
from app.core.paths import V1
from app.deployments import presenters, service
from app.deployments.schemas import (
    DeploymentDryRun,
    DeploymentList,
    DeploymentOut,
    DeploymentRequest,
    Evidence,
)
from app.environments.schemas import NAME
from app.environments.service import EnvironmentNotFound
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.idempotency.service import Idempotency
from app.maintenances.service import DeployFreeze
from app.runs import service as run_service
from app.runs.http import PreferHeader, created
from app.runs.models import RunStatus
from app.runs.router import RunId

router = APIRouter(prefix=f"{V1}/deployments", tags=["deployments"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)


def _accepted(created: service.Created) -> JSONResponse:
    """202 with the new deployment, built from what was just written."""
    out = presenters.deployment_out(
        created.run, created.deployment, created.targets, created.queue_position
    )
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=202,
        headers={"Location": presenters.location(created.run.id), "Retry-After": "2"},
    )


async def _answer(
    context: AppContext,
    principal: Principal,
    new: service.Created,
    accepted: JSONResponse,
    prefer: str | None,
    idem: Idempotency,
) -> JSONResponse:
    """The 202 as it is, or with `Prefer: wait` the deployment once it ended."""
    return await created(
        context,
        principal,
        new.run.id,
        accepted,
        location=presenters.location(new.run.id),
        prefer=prefer,
        idem=idem,
        render=presenters.renderer(context),
    )


@router.post(
    "",
    status_code=202,
    operation_id="createDeployment",
    summary="Deploy",
    response_model=DeploymentOut,
    responses={
        200: {"model": DeploymentDryRun, "description": "The plan of a dry run; nothing ran."},
        201: {"model": DeploymentOut, "description": "With `Prefer: wait`: the finished one."},
        **problem_responses(
            *AUTH_ERRORS,
            *IDEMPOTENCY_ERRORS,
            EnvironmentNotFound,
            service.VersionPinned,
            service.UnknownService,
            DeployFreeze,
            validation=True,
        ),
    },
)
async def create_deployment(
    body: DeploymentRequest,
    principal: ScopedDeployer,
    context: ContextDep,
    uow: SharedUnitOfWorkDep,
    idem: IdempotencyDep,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Queues the deployment (202 + `Location`). With `Prefer: wait=N` the answer is the
    finished deployment (201) — `success`, `failure`, `rolled_back`, `error` or
    `cancelled`, with `failure.type` saying why — or, when the wait ends first, 202 and
    `Retry-After`. A second deployment of a busy service waits its turn in `queued`
    (`queue_position`). A pinned version is refused (409 `version-pinned`), and so is a
    deployment (or a dry run) to an environment a maintenance window freezes (409
    `deploy-freeze`, naming the window)."""
    if body.dry_run:
        async with uow.reading() as session:
            planned = await service.plan(session, context.registry, principal, body)
        dry = presenters.dry_run_out(planned, planned.ahead, reveal=principal.role == Role.ADMIN)
        return JSONResponse(dry.model_dump(mode="json"), status_code=200)
    async with uow:
        await idem.claim(uow)
        new = await service.create(uow, context, principal, body)
        accepted = _accepted(new)
        await idem.complete(uow.session, accepted)
    return await _answer(context, principal, new, accepted, prefer, idem)


@router.get(
    "",
    operation_id="listDeployments",
    summary="List deployments",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_deployments(
    principal: ScopedViewer,
    session: SessionDep,
    page: CursorParamsDep,
    environment: Annotated[str | None, Query(pattern=NAME, max_length=63)] = None,
    service_name: Annotated[str | None, Query(alias="service", pattern=NAME, max_length=63)] = None,
    status: RunStatus | None = None,
) -> DeploymentList:
    """Newest first; deployments and rollbacks."""
    rows, next_cursor = await service.list_page(
        session, principal, service.Filters(environment, service_name, status), page
    )
    return DeploymentList(
        items=await presenters.deployments_out(session, rows), next_cursor=next_cursor
    )


@router.get(
    "/{deployment_id}",
    operation_id="getDeployment",
    summary="Get a deployment with its steps",
    responses=problem_responses(*AUTH_ERRORS, service.DeploymentNotFound, validation=True),
)
async def get_deployment(
    principal: ScopedViewer,
    context: ContextDep,
    deployment_id: RunId,
    wait: Annotated[
        int, Query(ge=0, le=60, description="Long poll: answer once it ended (≤ 60 s).")
    ] = 0,
) -> DeploymentOut:
    async with context.sessionmaker() as session:
        await service.get_or_404(session, principal, deployment_id)
    if wait:
        await run_service.wait_terminal(context, deployment_id, principal, wait)
    async with context.sessionmaker() as session:
        run = await service.get_or_404(session, principal, deployment_id)
        (out,) = await presenters.deployments_out(session, [run])
    return out


@router.post(
    "/{deployment_id}/cancel",
    status_code=202,
    operation_id="cancelDeployment",
    summary="Cancel a deployment",
    responses=problem_responses(
        *AUTH_ERRORS, service.DeploymentNotFound, run_service.RunAlreadyFinished, validation=True
    ),
)
async def cancel_deployment(
    principal: ScopedDeployer, context: ContextDep, uow: UnitOfWorkDep, deployment_id: RunId
) -> DeploymentOut:
    """A queued deployment ends `cancelled` at once; a running one stops after its current
    step and rolls back what it changed."""
    async with uow:
        await service.cancel(uow, context, principal, deployment_id)
    async with context.sessionmaker() as session:
        run = await service.get_or_404(session, principal, deployment_id)
        (out,) = await presenters.deployments_out(session, [run])
    return out


@router.post(
    "/{deployment_id}/rollback",
    status_code=202,
    operation_id="rollbackDeployment",
    summary="Roll back a deployment",
    response_model=DeploymentOut,
    responses={
        201: {"model": DeploymentOut, "description": "With `Prefer: wait`: the finished one."},
        **problem_responses(
            *AUTH_ERRORS,
            *IDEMPOTENCY_ERRORS,
            service.DeploymentNotFound,
            service.NotRollbackable,
            service.VersionPinned,
            validation=True,
        ),
    },
)
async def rollback_deployment(
    principal: ScopedDeployer,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    deployment_id: RunId,
    prefer: PreferHeader = None,
) -> JSONResponse:
    """Queues a deployment (kind `rollback`) of the versions that ran before, and pins
    the rolled-back versions until an operator unpins them."""
    async with uow:
        await idem.claim(uow)
        new = await service.rollback(uow, context, principal, deployment_id)
        accepted = _accepted(new)
        await idem.complete(uow.session, accepted)
    return await _answer(context, principal, new, accepted, prefer, idem)


@router.get(
    "/{deployment_id}/evidence",
    operation_id="getDeploymentEvidence",
    summary="The immutable evidence record of a finished deployment",
    response_model=Evidence,
    responses=problem_responses(
        *AUTH_ERRORS, service.DeploymentNotFound, service.EvidenceNotReady, validation=True
    ),
)
async def get_evidence(
    principal: ScopedViewer, session: SessionDep, deployment_id: RunId
) -> JSONResponse:
    """Request, checklist answers, who and when, every step's output and timings, health
    and smoke results, the rollback decision; `sha256` over its content."""
    record = await service.evidence(session, principal, deployment_id)
    return JSONResponse(record)
