"""``/v1/components``: the parts of the product the status page shows; viewers read,
operators change."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.deps import Operator, Viewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.components import presenters, service
from app.components.models import Component
from app.components.schemas import ComponentCreate, ComponentList, ComponentOut, ComponentUpdate
from app.core.deps import IfMatch, SessionDep, UnitOfWorkDep
from app.core.errors import BadRequest, PreconditionFailed, problem_responses
from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from app.core.paths import V1
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS

router = APIRouter(prefix=f"{V1}/components", tags=["components"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
ComponentId = Annotated[
    str, Path(pattern=r"^[0-9a-f-]{1,36}$", max_length=36, description="The component's id.")
]


def list_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1-200).")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | SkipJsonSchema[None],
        Query(
            max_length=service.CURSOR_MAX_LENGTH,
            pattern=service.CURSOR_PATTERN,
            json_schema_extra={"pattern": service.CURSOR_PATTERN},
            description="Opaque: the `next_cursor` of the previous page (empty: the first).",
        ),
    ] = None,
) -> service.ListParams:
    return service.ListParams(limit=limit, after=service.decode_cursor(cursor) if cursor else None)


ListParamsDep = Annotated[service.ListParams, Depends(list_params)]


async def _out(session: AsyncSession, component: Component) -> ComponentOut:
    claims = await service.claims_of(session, [component.id])
    return presenters.component_out(component, claims[component.id])


def _json(body: ComponentOut, etag: str, status: int = 200) -> JSONResponse:
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=status,
        headers={"ETag": etag, "Location": presenters.location(body.id)},
    )


@router.post(
    "",
    status_code=201,
    operation_id="createComponent",
    summary="Create a component",
    response_model=ComponentOut,
    responses=problem_responses(
        *AUTH_ERRORS, *IDEMPOTENCY_ERRORS, service.ComponentExists, validation=True
    ),
)
async def create_component(
    body: ComponentCreate, principal: Operator, uow: UnitOfWorkDep, idem: IdempotencyDep
) -> JSONResponse:
    """`services` must name existing `environment/service` pairs; a name taken (ignoring
    case) is a 409."""
    async with uow:
        await idem.claim(uow)
        component = await service.create(uow, principal, body)
        response = _json(await _out(uow.session, component), service.etag(component), 201)
        await idem.complete(uow.session, response)
    return response


@router.get(
    "",
    operation_id="listComponents",
    summary="List components",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_components(
    principal: Viewer, session: SessionDep, page: ListParamsDep
) -> ComponentList:
    """Ordered by group (ungrouped first), position, name; keyset pagination (`cursor` =
    the previous page's `next_cursor`)."""
    rows, next_cursor = await service.list_page(session, page)
    claims = await service.claims_of(session, [r.id for r in rows])
    return ComponentList(
        items=[presenters.component_out(r, claims[r.id]) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/{component_id}",
    operation_id="getComponent",
    summary="Get a component",
    response_model=ComponentOut,
    responses=problem_responses(*AUTH_ERRORS, service.ComponentNotFound, validation=True),
)
async def get_component(
    principal: Viewer, session: SessionDep, component_id: ComponentId
) -> JSONResponse:
    component = await service.get(session, component_id)
    return _json(await _out(session, component), service.etag(component))


@router.patch(
    "/{component_id}",
    operation_id="updateComponent",
    summary="Change a component",
    response_model=ComponentOut,
    responses=problem_responses(
        BadRequest,
        *AUTH_ERRORS,
        service.ComponentNotFound,
        service.ComponentExists,
        PreconditionFailed,
        validation=True,
    ),
)
async def update_component(
    body: ComponentUpdate,
    principal: Operator,
    uow: UnitOfWorkDep,
    component_id: ComponentId,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Absent fields keep their value; `group: null` ungroups. `status` sets the
    operator's status (`manual_status`): readers see the worst of it and of what open
    incidents and in-progress maintenance windows claim, and a change of that emits
    `component.status_changed`. `If-Match` refuses a stale write (412)."""
    async with uow:
        component = await service.update(uow, principal, component_id, body, if_match)
        out = await _out(uow.session, component)
        tag = service.etag(component)
    return _json(out, tag)


@router.delete(
    "/{component_id}",
    status_code=204,
    operation_id="deleteComponent",
    summary="Delete a component",
    responses=problem_responses(
        *AUTH_ERRORS,
        service.ComponentNotFound,
        service.ComponentClaimed,
        PreconditionFailed,
        validation=True,
    ),
)
async def delete_component(
    principal: Operator, uow: UnitOfWorkDep, component_id: ComponentId, if_match: IfMatch = None
) -> Response:
    """Refused (409) while an open incident or an in-progress maintenance window holds
    it at a status."""
    async with uow:
        await service.delete(uow, principal, component_id, if_match)
    return Response(status_code=204)
