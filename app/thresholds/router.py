"""``/v1/thresholds``: the runbook's thresholds, defined once; viewers read, admins
change."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic.json_schema import SkipJsonSchema

from app.auth.deps import Admin, Viewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.core.deps import IfMatch, SessionDep, UnitOfWorkDep
from app.core.errors import BadRequest, PreconditionFailed, problem_responses
from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from app.core.paths import V1
from app.thresholds import presenters, service
from app.thresholds.schemas import NAME, ThresholdList, ThresholdOut, ThresholdUpdate

router = APIRouter(prefix=f"{V1}/thresholds", tags=["thresholds"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
ThresholdName = Annotated[
    str, Path(pattern=NAME, max_length=64, description="`error_rate`, `latency_p95`, `cpu`…")
]
CURSOR = r"^([a-z][a-z0-9_]{0,63})?$"


def _json(body: ThresholdOut, etag: str) -> JSONResponse:
    return JSONResponse(
        body.model_dump(mode="json"),
        headers={"ETag": etag, "Location": presenters.location(body.name)},
    )


@router.get(
    "",
    operation_id="listThresholds",
    summary="List thresholds",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_thresholds(
    principal: Viewer,
    session: SessionDep,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1-200).")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | SkipJsonSchema[None],
        Query(
            max_length=64,
            pattern=CURSOR,
            json_schema_extra={"pattern": CURSOR},
            description="Opaque: the `next_cursor` of the previous page (empty: the first).",
        ),
    ] = None,
) -> ThresholdList:
    """By name; keyset pagination (`cursor` = the previous page's `next_cursor`)."""
    rows, next_cursor = await service.list_page(session, limit, cursor or None)
    return ThresholdList(items=[presenters.threshold_out(t) for t in rows], next_cursor=next_cursor)


@router.get(
    "/{name}",
    operation_id="getThreshold",
    summary="Get a threshold",
    response_model=ThresholdOut,
    responses=problem_responses(*AUTH_ERRORS, service.ThresholdNotFound, validation=True),
)
async def get_threshold(
    principal: Viewer, session: SessionDep, name: ThresholdName
) -> JSONResponse:
    threshold = await service.get(session, name)
    return _json(presenters.threshold_out(threshold), service.etag(threshold))


@router.patch(
    "/{name}",
    operation_id="updateThreshold",
    summary="Change a threshold",
    response_model=ThresholdOut,
    responses=problem_responses(
        BadRequest,
        *AUTH_ERRORS,
        service.ThresholdNotFound,
        service.AlertNameTaken,
        PreconditionFailed,
        validation=True,
    ),
)
async def update_threshold(
    body: ThresholdUpdate,
    principal: Admin,
    uow: UnitOfWorkDep,
    name: ThresholdName,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Levels, the severities an alert at each level opens, the alert names that measure
    it, and its Prometheus query. The daily health check, post-deploy verification and
    the Alertmanager receiver read the new values from their next use. `If-Match`
    refuses a stale write (412)."""
    async with uow:
        threshold = await service.update(uow, principal, name, body, if_match)
        out = presenters.threshold_out(threshold)
        tag = service.etag(threshold)
    return _json(out, tag)
