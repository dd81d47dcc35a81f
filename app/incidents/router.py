"""``/v1/incidents``: declare, list, read (timeline, clocks, recent deployments), change,
post updates, acknowledge, resolve, write the postmortem, roll back a recent
deployment. Viewers read; operators change."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from app.auth.deps import Operator, Viewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.auth.principal import Principal
from app.components.vocabulary import IncidentStatus, Severity
from app.core.context import AppContext
from app.core.deps import ContextDep, CursorParamsDep, IfMatch, SessionDep, UnitOfWorkDep
from app.core.errors import BadRequest, PreconditionFailed, problem_responses
from app.core.paths import V1
from app.deployments import presenters as deployment_presenters
from app.deployments import service as deployment_service
from app.deployments.schemas import DeploymentOut
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.incidents import presenters, service
from app.incidents.schemas import (
    ID,
    AcknowledgeRequest,
    IncidentCreate,
    IncidentDetail,
    IncidentList,
    IncidentPatch,
    IncidentUpdateCreate,
    PostmortemPut,
    ResolveRequest,
    RollbackRequest,
)

router = APIRouter(prefix=f"{V1}/incidents", tags=["incidents"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
IncidentId = Annotated[str, Path(pattern=ID, max_length=36, description="The incident's id.")]


async def _detail(
    context: AppContext, principal: Principal, incident_id: str, status: int = 200
) -> JSONResponse:
    """The incident as committed, with its ETag and Location."""
    async with context.sessionmaker() as session:
        found = await service.detail(session, context.settings.incidents, principal, incident_id)
    return _response(found, status)


def _response(found: service.Detail, status: int = 200) -> JSONResponse:
    body = presenters.incident_detail(found.incident, found.affected, found.timeline, found.recent)
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=status,
        headers={
            "ETag": service.etag(found.incident),
            "Location": presenters.location(found.incident.id),
        },
    )


@router.post(
    "",
    status_code=201,
    operation_id="createIncident",
    summary="Declare an incident",
    response_model=IncidentDetail,
    responses=problem_responses(
        *AUTH_ERRORS, *IDEMPOTENCY_ERRORS, service.UnknownComponent, validation=True
    ),
)
async def create_incident(
    body: IncidentCreate,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
) -> JSONResponse:
    """Opens it `investigating` with a first public update; its components take the given
    status (default from the severity) until it is resolved; its response clocks start
    (`ack_due_at`, `next_update_due_at`, `resolve_target_at`). Send `Idempotency-Key` to
    make a retry safe."""
    async with uow:
        await idem.claim(uow)
        incident = await service.create(
            uow,
            context,
            principal,
            title=body.title,
            severity=body.severity,
            components={c.component_id: c.status for c in body.components},
            message=body.message,
            commander=body.commander,
            acknowledge=body.acknowledge,
        )
        found = await service.detail(
            uow.session, context.settings.incidents, principal, incident.id
        )
        response = _response(found, 201)
        await idem.complete(uow.session, response)
    return response


@router.get(
    "",
    operation_id="listIncidents",
    summary="List incidents",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_incidents(
    principal: Viewer,
    session: SessionDep,
    page: CursorParamsDep,
    status: Annotated[IncidentStatus | None, Query(description="Only this status.")] = None,
    severity: Annotated[Severity | None, Query(description="Only this severity.")] = None,
    open: Annotated[
        bool | None,
        Query(description="`true`: not resolved; `false`: resolved or postmortem."),
    ] = None,
) -> IncidentList:
    """Newest first; keyset pagination (`cursor` = the previous page's `next_cursor`)."""
    rows, next_cursor = await service.list_page(
        session, page, service.Filters(status=status, severity=severity, open=open)
    )
    affected = await service.affected(session, [r.id for r in rows])
    return IncidentList(
        items=[presenters.incident_out(r, affected[r.id]) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/{incident_id}",
    operation_id="getIncident",
    summary="Get an incident",
    response_model=IncidentDetail,
    responses=problem_responses(*AUTH_ERRORS, service.IncidentNotFound, validation=True),
)
async def get_incident(
    principal: Viewer, context: ContextDep, incident_id: IncidentId
) -> JSONResponse:
    """With its components, timeline (public and internal entries), response clocks and
    the deployments of its components' services shortly before it opened, each with the
    link that rolls it back."""
    return await _detail(context, principal, incident_id)


@router.patch(
    "/{incident_id}",
    operation_id="updateIncident",
    summary="Change an incident",
    response_model=IncidentDetail,
    responses=problem_responses(
        BadRequest,
        *AUTH_ERRORS,
        service.IncidentNotFound,
        service.UnknownComponent,
        service.IncidentClosed,
        PreconditionFailed,
        validation=True,
    ),
)
async def update_incident(
    body: IncidentPatch,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    incident_id: IncidentId,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Title, severity (recomputes the clocks), commander (null clears it), components
    (the whole list). A resolved incident no longer changes (409). `If-Match` refuses a
    stale write (412)."""
    changes = body.model_dump(exclude_unset=True)
    if body.components is not None:
        changes["components"] = {c.component_id: c.status for c in body.components}
    for name in ("title", "severity", "components"):
        if name in changes and changes[name] is None:
            del changes[name]  # null: unchanged (only the commander is cleared by null)
    async with uow:
        await service.change(uow, context, principal, incident_id, changes, if_match)
    return await _detail(context, principal, incident_id)


@router.post(
    "/{incident_id}/updates",
    status_code=201,
    operation_id="addIncidentUpdate",
    summary="Post an update",
    response_model=IncidentDetail,
    responses=problem_responses(
        *AUTH_ERRORS,
        *IDEMPOTENCY_ERRORS,
        service.IncidentNotFound,
        service.IllegalTransition,
        validation=True,
    ),
)
async def add_update(
    body: IncidentUpdateCreate,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    incident_id: IncidentId,
) -> JSONResponse:
    """A timeline entry, optionally with a status move: any move between
    `investigating`, `identified` and `monitoring` (back to investigating when it came
    back), or to `resolved`; a resolved incident stays resolved (409). A public entry
    restarts the update clock and is announced (`incident.updated`, or
    `incident.resolved`); an internal one is for operators only."""
    async with uow:
        await idem.claim(uow)
        await service.add_update(
            uow,
            context,
            principal,
            incident_id,
            message=body.message,
            status=body.status,
            visibility=body.visibility,
        )
        found = await service.detail(
            uow.session, context.settings.incidents, principal, incident_id
        )
        response = _response(found, 201)
        await idem.complete(uow.session, response)
    return response


@router.post(
    "/{incident_id}/acknowledge",
    operation_id="acknowledgeIncident",
    summary="Acknowledge an incident",
    response_model=IncidentDetail,
    responses=problem_responses(
        BadRequest, *AUTH_ERRORS, service.IncidentNotFound, service.IncidentClosed, validation=True
    ),
)
async def acknowledge_incident(
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    incident_id: IncidentId,
    body: AcknowledgeRequest | None = None,
) -> JSONResponse:
    """Stops the acknowledgement clock and records who acknowledged (an internal entry).
    Acknowledging again changes nothing."""
    async with uow:
        await service.acknowledge(
            uow, context, principal, incident_id, message=body.message if body else None
        )
    return await _detail(context, principal, incident_id)


@router.post(
    "/{incident_id}/resolve",
    operation_id="resolveIncident",
    summary="Resolve an incident",
    response_model=IncidentDetail,
    responses=problem_responses(
        BadRequest,
        *AUTH_ERRORS,
        service.IncidentNotFound,
        service.IllegalTransition,
        validation=True,
    ),
)
async def resolve_incident(
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    incident_id: IncidentId,
    body: ResolveRequest | None = None,
) -> JSONResponse:
    """Resolved with a last public update (`incident.resolved`); its components come back
    to what else holds them; its clocks stop. 409 when it is already resolved."""
    message = (body or ResolveRequest()).message
    async with uow:
        await service.resolve(uow, context, principal, incident_id, message=message)
    return await _detail(context, principal, incident_id)


@router.put(
    "/{incident_id}/postmortem",
    operation_id="putIncidentPostmortem",
    summary="Write the postmortem",
    response_model=IncidentDetail,
    responses=problem_responses(
        BadRequest,
        *AUTH_ERRORS,
        service.IncidentNotFound,
        service.PostmortemTooEarly,
        PreconditionFailed,
        validation=True,
    ),
)
async def put_postmortem(
    body: PostmortemPut,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    incident_id: IncidentId,
    if_match: IfMatch = None,
) -> JSONResponse:
    """The postmortem (Markdown) and its action items, once the incident is resolved
    (409 before). `publish: true` moves it to `postmortem` and shows the document on the
    status page. `If-Match` refuses a stale write (412)."""
    async with uow:
        await service.put_postmortem(
            uow,
            context,
            principal,
            incident_id,
            body=body.body,
            action_items=[i.model_dump(mode="json") for i in body.action_items],
            publish=body.publish,
            if_match=if_match,
        )
    return await _detail(context, principal, incident_id)


@router.post(
    "/{incident_id}/rollback",
    status_code=202,
    operation_id="rollbackIncidentDeployment",
    summary="Roll back one of the incident's recent deployments",
    response_model=DeploymentOut,
    responses=problem_responses(
        *AUTH_ERRORS,
        *IDEMPOTENCY_ERRORS,
        service.IncidentNotFound,
        service.UnrelatedDeployment,
        deployment_service.DeploymentNotFound,
        deployment_service.NotRollbackable,
        deployment_service.VersionPinned,
        validation=True,
    ),
)
async def rollback_deployment(
    body: RollbackRequest,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    incident_id: IncidentId,
) -> JSONResponse:
    """Queues the rollback of `deployment_id` (one of the incident's
    `recent_deployments`) exactly as `POST /v1/deployments/{id}/rollback` does, pinning
    the rolled-back versions; the incident's timeline names it. Answers the new
    deployment (202 + `Location`)."""
    async with uow:
        await idem.claim(uow)
        new = await service.rollback(uow, context, principal, incident_id, body.deployment_id)
        out = deployment_presenters.deployment_out(
            new.run, new.deployment, new.targets, new.queue_position
        )
        response = JSONResponse(
            out.model_dump(mode="json"),
            status_code=202,
            headers={"Location": deployment_presenters.location(new.run.id)},
        )
        await idem.complete(uow.session, response)
    return response
