"""``/v1/maintenances``: schedule, change, announce, start, complete and cancel
maintenance windows (operators); read them (viewers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.deps import Operator, Viewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.core.deps import CursorParamsDep, IfMatch, SessionDep, UnitOfWorkDep
from app.core.errors import BadRequest, PreconditionFailed, problem_responses
from app.core.paths import V1
from app.environments.schemas import NAME
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.maintenances import presenters, service
from app.maintenances.models import Maintenance
from app.maintenances.schemas import (
    ID,
    MaintenanceChange,
    MaintenanceCreate,
    MaintenanceList,
    MaintenanceOut,
    MaintenanceUpdateCreate,
    Transition,
    WindowStatus,
)

router = APIRouter(prefix=f"{V1}/maintenances", tags=["maintenances"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
MaintenanceId = Annotated[
    str, Path(pattern=ID, max_length=36, description="The maintenance window's id.")
]


async def _answer(
    session: AsyncSession, window: Maintenance, status: int = 200, *, location: bool = False
) -> JSONResponse:
    details = await service.details(session, [window])
    body = presenters.maintenance_out(window, details)
    headers = {"ETag": service.etag(window)}
    if location:
        headers["Location"] = presenters.location(window.id)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


@router.post(
    "",
    status_code=201,
    operation_id="createMaintenance",
    summary="Schedule a maintenance window",
    response_model=MaintenanceOut,
    responses=problem_responses(
        *AUTH_ERRORS, *IDEMPOTENCY_ERRORS, service.InvalidWindow, validation=True
    ),
)
async def create_maintenance(
    body: MaintenanceCreate, principal: Operator, uow: UnitOfWorkDep, idem: IdempotencyDep
) -> JSONResponse:
    """A window from `scheduled_for` to `scheduled_until` (which must be later, and in the
    future). With `auto_transition` (the default) the scheduler starts it on time: its
    components show `under_maintenance`, alerts for them open no incident, and its
    `environments` are frozen for deployments (409 `deploy-freeze`) unless it is a
    `deploy_window`. Unknown components or environments: 422."""
    async with uow:
        await idem.claim(uow)
        window = await service.create(uow, principal, body)
        response = await _answer(uow.session, window, 201, location=True)
        await idem.complete(uow.session, response)
    return response


@router.get(
    "",
    operation_id="listMaintenances",
    summary="List maintenance windows",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_maintenances(
    principal: Viewer,
    session: SessionDep,
    page: CursorParamsDep,
    status: Annotated[WindowStatus | None, Query(description="Only this status.")] = None,
    environment: Annotated[
        str | None,
        Query(pattern=NAME, max_length=63, description="Only windows concerning it."),
    ] = None,
    component: Annotated[
        str | None,
        Query(pattern=ID, max_length=36, description="Only windows of this component (id)."),
    ] = None,
) -> MaintenanceList:
    """Newest first; keyset pagination (`cursor` = the previous page's `next_cursor`)."""
    rows, next_cursor = await service.list_page(
        session,
        service.Filters(status=status, environment=environment, component_id=component),
        page,
    )
    details = await service.details(session, rows)
    return MaintenanceList(
        items=[presenters.maintenance_out(w, details) for w in rows], next_cursor=next_cursor
    )


@router.get(
    "/{maintenance_id}",
    operation_id="getMaintenance",
    summary="Get a maintenance window",
    response_model=MaintenanceOut,
    responses=problem_responses(*AUTH_ERRORS, service.MaintenanceNotFound, validation=True),
)
async def get_maintenance(
    principal: Viewer, session: SessionDep, maintenance_id: MaintenanceId
) -> JSONResponse:
    """The window with its components (and their status now), environments and updates;
    `ETag` for `If-Match`."""
    window = await service.get(session, maintenance_id)
    return await _answer(session, window)


@router.patch(
    "/{maintenance_id}",
    operation_id="updateMaintenance",
    summary="Change a maintenance window",
    response_model=MaintenanceOut,
    responses=problem_responses(
        *AUTH_ERRORS,
        BadRequest,
        service.MaintenanceNotFound,
        service.IllegalTransition,
        PreconditionFailed,
        service.InvalidWindow,
        validation=True,
    ),
)
async def update_maintenance(
    body: MaintenanceChange,
    principal: Operator,
    uow: UnitOfWorkDep,
    maintenance_id: MaintenanceId,
    if_match: IfMatch = None,
) -> JSONResponse:
    """A scheduled window changes freely; a started one keeps its start (its end may be
    extended, its components and environments changed); an ended one only its title and
    description (409 otherwise). `If-Match` refuses a stale write (412)."""
    async with uow:
        window = await service.update(uow, principal, maintenance_id, body, if_match)
        response = await _answer(uow.session, window)
    return response


@router.post(
    "/{maintenance_id}/updates",
    status_code=201,
    operation_id="createMaintenanceUpdate",
    summary="Post an update about a maintenance window",
    response_model=MaintenanceOut,
    responses=problem_responses(
        *AUTH_ERRORS,
        *IDEMPOTENCY_ERRORS,
        service.MaintenanceNotFound,
        service.IllegalTransition,
        validation=True,
    ),
)
async def create_update(
    body: MaintenanceUpdateCreate,
    principal: Operator,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    maintenance_id: MaintenanceId,
) -> JSONResponse:
    """A message to readers of the status page; the window as it is now, with it."""
    async with uow:
        await idem.claim(uow)
        window, _ = await service.post_update(uow, principal, maintenance_id, body)
        response = await _answer(uow.session, window, 201)
        await idem.complete(uow.session, response)
    return response


_MOVE_ERRORS = problem_responses(
    *AUTH_ERRORS,
    BadRequest,
    service.MaintenanceNotFound,
    service.IllegalTransition,
    validation=True,
)


async def _transition(
    uow: UnitOfWorkDep,
    principal: Operator,
    maintenance_id: str,
    move: str,
    body: Transition | None,
) -> JSONResponse:
    async with uow:
        window = await service.transition(
            uow, principal, maintenance_id, move, body.message if body else None
        )
        response = await _answer(uow.session, window)
    return response


@router.post(
    "/{maintenance_id}/start",
    operation_id="startMaintenance",
    summary="Start a maintenance window now",
    response_model=MaintenanceOut,
    responses=_MOVE_ERRORS,
)
async def start_maintenance(
    principal: Operator,
    uow: UnitOfWorkDep,
    maintenance_id: MaintenanceId,
    body: Transition | None = None,
) -> JSONResponse:
    """`scheduled` → `in_progress` (early, or a window the scheduler does not run); 409
    from any other status."""
    return await _transition(uow, principal, maintenance_id, "start", body)


@router.post(
    "/{maintenance_id}/complete",
    operation_id="completeMaintenance",
    summary="Complete a maintenance window now",
    response_model=MaintenanceOut,
    responses=_MOVE_ERRORS,
)
async def complete_maintenance(
    principal: Operator,
    uow: UnitOfWorkDep,
    maintenance_id: MaintenanceId,
    body: Transition | None = None,
) -> JSONResponse:
    """`in_progress` or `verifying` → `completed`: its components are restored and its
    environments open again; 409 from any other status."""
    return await _transition(uow, principal, maintenance_id, "complete", body)


@router.post(
    "/{maintenance_id}/cancel",
    operation_id="cancelMaintenance",
    summary="Cancel a scheduled maintenance window",
    response_model=MaintenanceOut,
    responses=_MOVE_ERRORS,
)
async def cancel_maintenance(
    principal: Operator,
    uow: UnitOfWorkDep,
    maintenance_id: MaintenanceId,
    body: Transition | None = None,
) -> JSONResponse:
    """`scheduled` → `cancelled`; a started window is completed instead (409)."""
    return await _transition(uow, principal, maintenance_id, "cancel", body)
