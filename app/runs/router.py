"""``/v1/runs``: every run of every kind — list, read (long poll), follow (SSE), cancel."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import StreamingResponse

from app.auth.deps import ScopedOperator, ScopedViewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.core.deps import ContextDep, CursorParamsDep, SessionDep, UnitOfWorkDep
from app.core.errors import problem_responses
from app.core.paths import V1
from app.core.schemas import PRINTABLE, Timestamp
from app.runs import service
from app.runs.http import event_stream
from app.runs.models import RunKind, RunStatus
from app.runs.presenters import run_out
from app.runs.schemas import RunList, RunOut

router = APIRouter(prefix=f"{V1}/runs", tags=["runs"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE)]
# Event numbers are a 32-bit column: a position beyond it is a 422, not a failed query.
MAX_EVENT_SEQ = 2**31 - 1


@router.get(
    "",
    operation_id="listRuns",
    summary="List runs",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_runs(
    principal: ScopedViewer,
    session: SessionDep,
    page: CursorParamsDep,
    kind: RunKind | None = None,
    status: RunStatus | None = None,
    environment: Annotated[str | None, Query(max_length=100, pattern=PRINTABLE)] = None,
    requested_by: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE)] = None,
    since: Annotated[Timestamp | None, Query(description="Created at or after.")] = None,
    until: Annotated[Timestamp | None, Query(description="Created before.")] = None,
) -> RunList:
    """Newest first. A token restricted to an environment sees that environment's runs."""
    filters = service.RunFilters(
        kind=kind,
        status=status,
        environment=environment,
        requested_by=requested_by,
        since=since.astimezone(dt.UTC) if since else None,
        until=until.astimezone(dt.UTC) if until else None,
    )
    rows, next_cursor = await service.list_page(session, filters, page, principal)
    return RunList(items=[run_out(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{run_id}",
    operation_id="getRun",
    summary="Get a run",
    responses=problem_responses(*AUTH_ERRORS, service.RunNotFound, validation=True),
)
async def get_run(
    principal: ScopedViewer,
    context: ContextDep,
    run_id: RunId,
    wait: Annotated[
        int,
        Query(
            ge=0,
            le=60,
            description="Long poll: answer once the run is finished, or after this many seconds.",
        ),
    ] = 0,
) -> RunOut:
    run = await service.wait_terminal(context, run_id, principal, wait)
    return run_out(run)


RUN_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One Server-Sent Event; the stream opens with `retry` alone.",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "Its sequence number."},
        "event": {"type": "string", "description": "Its type: `run.queued` … `run.finished`."},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object"},
            "description": "The event's fields and `at`, its time.",
        },
        "retry": {"type": "integer", "description": "Milliseconds to wait before resuming."},
    },
}


@router.get(
    "/{run_id}/events",
    operation_id="streamRunEvents",
    summary="Follow a run (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: `id` is the event's sequence number; the "
            "stream ends after the `run.finished` event.",
            # One event (OpenAPI 3.1 describes an event stream by its events).
            "content": {"text/event-stream": {"schema": RUN_EVENT}},
        },
        **problem_responses(*AUTH_ERRORS, service.RunNotFound, validation=True),
    },
)
async def stream_run_events(
    principal: ScopedViewer,
    context: ContextDep,
    session: SessionDep,
    run_id: RunId,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID", ge=0, le=MAX_EVENT_SEQ, description="Resume after this event."
        ),
    ] = None,
    after: Annotated[
        int, Query(ge=0, le=MAX_EVENT_SEQ, description="Resume after this event.")
    ] = 0,
) -> StreamingResponse:
    await service.get_run(session, run_id, principal)  # 404 before the stream starts
    await session.close()
    start = last_event_id if last_event_id is not None else after
    return StreamingResponse(
        event_stream(context, run_id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/{run_id}/cancel",
    operation_id="cancelRun",
    summary="Cancel a run",
    responses=problem_responses(
        *AUTH_ERRORS, service.RunNotFound, service.RunAlreadyFinished, validation=True
    ),
)
async def cancel_run(
    principal: ScopedOperator, context: ContextDep, uow: UnitOfWorkDep, run_id: RunId
) -> RunOut:
    """A queued run is cancelled at once; a running one stops after its current step."""
    async with uow:
        run = await service.cancel(uow, context, principal, run_id)
        run = await service.get_run(uow.session, run.id, principal)
    return run_out(run)
