"""``/v1/schedules``: cron schedules that start runbooks (operators create, change and
delete them; viewers read them and their slots)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.deps import Operator, Viewer
from app.auth.errors import Denial, Forbidden, TooManyRequests, Unauthenticated
from app.auth.principal import Principal
from app.core.deps import ContextDep, CursorParamsDep, IfMatch, SessionDep, UnitOfWorkDep
from app.core.errors import BadRequest, PreconditionFailed, problem_responses
from app.core.paths import V1
from app.environments.service import EnvironmentNotFound
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.schedules import presenters, service
from app.schedules.models import Schedule
from app.schedules.schemas import (
    ID,
    RUNBOOK,
    ScheduleChange,
    ScheduleCreate,
    ScheduleList,
    ScheduleOut,
    SlotList,
    SlotStatusName,
)

router = APIRouter(prefix=f"{V1}/schedules", tags=["schedules"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
ScheduleId = Annotated[str, Path(pattern=ID, max_length=36, description="The schedule's id.")]
T = TypeVar("T")


async def _answer(
    session: AsyncSession, schedule: Schedule, status: int = 200, *, location: bool = False
) -> JSONResponse:
    recent = await service.recent_slots(session, [schedule.id])
    body = presenters.schedule_out(schedule, recent)
    headers = {"ETag": service.etag(schedule)}
    if location:
        headers["Location"] = presenters.location(schedule.id)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


async def _audited(request: Request, principal: Principal, call: Awaitable[T]) -> T:
    """A refusal of the service (the runbook needs a higher role than the caller's) is
    answered 403 and audited like any other denial."""
    try:
        return await call
    except Forbidden as exc:
        exc.denial = Denial(
            principal=principal,
            reason="runbook_role",
            method=request.method,
            path=request.url.path,
            client_address=principal.client_address,
            request_id=principal.request_id,
        )
        raise


@router.post(
    "",
    status_code=201,
    operation_id="createSchedule",
    summary="Create a schedule",
    response_model=ScheduleOut,
    responses=problem_responses(
        *AUTH_ERRORS,
        *IDEMPOTENCY_ERRORS,
        service.ScheduleNameTaken,
        service.InvalidSchedule,
        EnvironmentNotFound,
        validation=True,
    ),
)
async def create_schedule(
    body: ScheduleCreate,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    request: Request,
) -> JSONResponse:
    """Starts `runbook` with `parameters` at each slot of `cron` in `timezone`. The runbook
    must be in the catalog and accept the parameters (422), and the caller must be allowed
    to start it (403; 404 for an environment the caller cannot see). A slot fires at most
    once; one no worker fired within the grace period is recorded `missed` and reported
    (`schedule.missed`), never run late."""
    async with uow:
        await idem.claim(uow)
        schedule = await _audited(request, principal, service.create(uow, context, principal, body))
        response = await _answer(uow.session, schedule, 201, location=True)
        await idem.complete(uow.session, response)
    return response


@router.get(
    "",
    operation_id="listSchedules",
    summary="List schedules",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_schedules(
    principal: Viewer,
    session: SessionDep,
    page: CursorParamsDep,
    runbook: Annotated[
        str | None,
        Query(pattern=RUNBOOK, max_length=63, description="Only schedules of this runbook."),
    ] = None,
) -> ScheduleList:
    """Newest first; keyset pagination (`cursor` = the previous page's `next_cursor`)."""
    rows, next_cursor = await service.list_page(session, page, runbook=runbook)
    recent = await service.recent_slots(session, [s.id for s in rows])
    return ScheduleList(
        items=[presenters.schedule_out(s, recent) for s in rows], next_cursor=next_cursor
    )


@router.get(
    "/{schedule_id}",
    operation_id="getSchedule",
    summary="Get a schedule",
    response_model=ScheduleOut,
    responses=problem_responses(*AUTH_ERRORS, service.ScheduleNotFound, validation=True),
)
async def get_schedule(
    principal: Viewer, session: SessionDep, schedule_id: ScheduleId
) -> JSONResponse:
    """The schedule with its next slot and its latest slots; `ETag` for `If-Match`."""
    schedule = await service.get(session, schedule_id)
    return await _answer(session, schedule)


@router.patch(
    "/{schedule_id}",
    operation_id="updateSchedule",
    summary="Change a schedule",
    response_model=ScheduleOut,
    responses=problem_responses(
        *AUTH_ERRORS,
        BadRequest,
        service.ScheduleNotFound,
        service.ScheduleNameTaken,
        PreconditionFailed,
        service.InvalidSchedule,
        EnvironmentNotFound,
        validation=True,
    ),
)
async def update_schedule(
    body: ScheduleChange,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    schedule_id: ScheduleId,
    request: Request,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Absent fields keep their value; the runbook and parameters are checked again (422,
    403). A new `cron`, `timezone` or `enabled` counts the next slot from now. `If-Match`
    refuses a stale write (412)."""
    async with uow:
        schedule = await _audited(
            request,
            principal,
            service.update_schedule(uow, context, principal, schedule_id, body, if_match),
        )
        response = await _answer(uow.session, schedule)
    return response


@router.delete(
    "/{schedule_id}",
    status_code=204,
    operation_id="deleteSchedule",
    summary="Delete a schedule",
    responses=problem_responses(
        *AUTH_ERRORS, service.ScheduleNotFound, PreconditionFailed, validation=True
    ),
)
async def delete_schedule(
    principal: Operator, uow: UnitOfWorkDep, schedule_id: ScheduleId, if_match: IfMatch = None
) -> Response:
    """With its slots (its runs stay). A runbook's default schedule, once deleted, is not
    created again."""
    async with uow:
        await service.delete_schedule(uow, principal, schedule_id, if_match)
    return Response(status_code=204)


@router.get(
    "/{schedule_id}/slots",
    operation_id="listScheduleSlots",
    summary="List a schedule's slots",
    responses=problem_responses(*AUTH_ERRORS, service.ScheduleNotFound, validation=True),
)
async def list_slots(
    principal: Viewer,
    session: SessionDep,
    page: CursorParamsDep,
    schedule_id: ScheduleId,
    status: Annotated[SlotStatusName | None, Query(description="Only this status.")] = None,
) -> SlotList:
    """Newest first: each slot `fired` (with its run), `missed` or `failed` (with why)."""
    rows, next_cursor = await service.slots_page(session, schedule_id, page, status=status)
    return SlotList(items=[presenters.slot_out(s) for s in rows], next_cursor=next_cursor)
