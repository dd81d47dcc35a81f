"""HTTP helpers every run-creating endpoint shares: ``Prefer: wait`` (RFC 7240), the
``202 Accepted`` + ``Location`` answer, and Server-Sent Events of a run's progress."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Header
from fastapi.responses import JSONResponse
from sqlalchemy import select

from app.auth.principal import Principal
from app.core.context import AppContext
from app.core.notify import wait_for
from app.core.redaction import redact_value
from app.idempotency.service import Idempotency
from app.runs import service as run_service
from app.runs.models import TERMINAL_STATUSES, Run
from app.runs.presenters import run_out

logger = logging.getLogger(__name__)

MAX_PREFER_WAIT = 300
RETRY_AFTER = "2"
_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)

PreferHeader = Annotated[
    str | None,
    Header(
        alias="Prefer",
        description="`wait=<seconds>` (RFC 7240, at most 300): answer once the run is "
        "finished (201) or the wait ends (202).",
    ),
]


def parse_prefer_wait(prefer: str | None) -> int | None:
    if not prefer:
        return None
    match = _WAIT.search(prefer)
    if match is None:
        return None
    return min(int(match.group(1)), MAX_PREFER_WAIT)


def run_response(run: Run, status_code: int, location: str, **headers: str) -> JSONResponse:
    body = run_out(run, location).model_dump(mode="json")
    return JSONResponse(body, status_code=status_code, headers={"Location": location, **headers})


# Builds the response of a creating POST from its run (its kind may add to the body).
Render = Callable[[Run, int, str, dict[str, str]], Awaitable[JSONResponse]]


async def _render_run(
    run: Run, status: int, location: str, headers: dict[str, str]
) -> JSONResponse:
    return run_response(run, status, location, **headers)


async def created(
    context: AppContext,
    principal: Principal,
    run_id: str,
    accepted: JSONResponse,
    *,
    location: str,
    prefer: str | None,
    idem: Idempotency,
    render: Render | None = None,
) -> JSONResponse:
    """The answer to a creating POST: ``accepted`` (202), or with ``Prefer: wait`` the
    finished run (201) — or the run as it is when the wait ends (202 + ``Retry-After``).
    A replay of the same Idempotency-Key returns the last of these.

    The run is committed already: when waiting or building the answer fails (the
    database busy or gone), the answer is ``accepted``, never an error saying nothing
    was changed."""
    wait = parse_prefer_wait(prefer)
    if wait is None:
        return accepted
    try:
        run = await run_service.wait_terminal(context, run_id, principal, wait)
        applied = {"Preference-Applied": f"wait={wait}"}
        respond = render or _render_run
        if run.status in TERMINAL_STATUSES:
            response = await respond(run, 201, location, applied)
        else:
            headers = {**applied, "Retry-After": RETRY_AFTER}
            response = await respond(run, 202, location, headers)
    except Exception as exc:
        # The class only: a statement's text or parameters may hold what must not be logged.
        logger.warning("waiting for run %s failed (%s); answering 202", run_id, type(exc).__name__)
        return accepted
    await idem.replace(context, response)
    return response


def sse(event_id: int, event: str, data: dict[str, object]) -> str:
    payload = json.dumps(data, separators=(",", ":"), default=str)
    return f"id: {event_id}\nevent: {event}\ndata: {payload}\n\n"


async def event_stream(
    context: AppContext, run_id: str, after: int, *, keepalive: float = 15.0
) -> AsyncIterator[str]:
    """Every event after ``after``, in order, until the run's final event; resumable."""
    last = after
    yield "retry: 2000\n\n"
    with context.notifier.watch(run_id) as changed:
        while True:
            changed.clear()
            # Read the status first: a run seen finished has all its events committed.
            finished = await _finished(context, run_id)
            async with context.sessionmaker() as session:
                events = await run_service.events_after(session, run_id, last)
            for event in events:
                last = event.seq
                data = {**redact_value(event.data), "at": event.created_at.isoformat()}
                yield sse(event.seq, event.type, data)
                if event.type == "run.finished":
                    return
            if events:
                continue
            if finished:
                return  # resumed at or after the final event: nothing more will come
            if not await wait_for(changed, keepalive):
                yield ": keep-alive\n\n"


async def _finished(context: AppContext, run_id: str) -> bool:
    async with context.sessionmaker() as session:
        status = await session.scalar(select(Run.status).where(Run.id == run_id))
    return status is None or status in TERMINAL_STATUSES
