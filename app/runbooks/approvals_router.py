"""``POST /v1/runs/{id}/approve`` and ``/reject``: the answer to a run's approval step
(rules: :mod:`app.runbooks.approvals`)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.auth.deps import ScopedOperator
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.core.deps import ContextDep, UnitOfWorkDep
from app.core.errors import problem_responses
from app.core.paths import V1
from app.core.schemas import MULTILINE, MULTILINE_NOTE, RequestModel
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.runbooks import approvals
from app.runbooks.models import Decision, RunApproval
from app.runs.router import RunId
from app.runs.service import RunNotFound

router = APIRouter(prefix=f"{V1}/runs", tags=["runs"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
ERRORS = problem_responses(
    *AUTH_ERRORS,
    *IDEMPOTENCY_ERRORS,
    RunNotFound,
    approvals.NoPendingApproval,
    validation=True,
)
MAX_REASON = 2000


class ApproveBody(RequestModel):
    reason: str = Field(
        default="", max_length=MAX_REASON, pattern=MULTILINE, description=MULTILINE_NOTE
    )


class RejectBody(RequestModel):
    reason: str = Field(
        min_length=1, max_length=MAX_REASON, pattern=MULTILINE, description=MULTILINE_NOTE
    )


class ApprovalLinks(BaseModel):
    run: str
    events: str


class ApprovalOut(BaseModel):
    run_id: str
    position: int = Field(description="The approval step's position in the run.")
    decision: Decision
    decided_by: str
    reason: str
    decided_at: dt.datetime
    links: ApprovalLinks


def _answer(row: RunApproval) -> JSONResponse:
    body = ApprovalOut(
        run_id=row.run_id,
        position=row.position,
        decision=Decision(row.decision),
        decided_by=row.decided_by,
        reason=row.reason,
        decided_at=row.decided_at,
        links=ApprovalLinks(run=f"{V1}/runs/{row.run_id}", events=f"{V1}/runs/{row.run_id}/events"),
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200)


async def _decide(
    principal: ScopedOperator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    run_id: str,
    decision: Decision,
    reason: str,
    path: str,
) -> JSONResponse:
    async with uow:
        await idem.claim(uow)
        row = await approvals.decide(uow, context, principal, run_id, decision, reason, path=path)
        response = _answer(row)
        await idem.complete(uow.session, response)
    return response


@router.post(
    "/{run_id}/approve",
    operation_id="approveRun",
    summary="Approve a run's pending step",
    response_model=ApprovalOut,
    responses=ERRORS,
)
async def approve_run(
    principal: ScopedOperator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    run_id: RunId,
    body: ApproveBody | None = Body(default=None),
) -> JSONResponse:
    """The run's `approval` step (see `awaiting_approval` of the run) succeeds and the
    run goes on. 409 `no-pending-approval` when the run waits for no approval (or it was
    answered already: the first answer counts). The token that requested the run may not
    approve it (403 `approval-by-requester`) unless it is an admin's; a step may require
    an admin (`approvers_role`)."""
    reason = body.reason if body is not None else ""
    return await _decide(
        principal,
        context,
        uow,
        idem,
        run_id,
        Decision.APPROVED,
        reason,
        f"{V1}/runs/{run_id}/approve",
    )


@router.post(
    "/{run_id}/reject",
    operation_id="rejectRun",
    summary="Reject a run's pending step",
    response_model=ApprovalOut,
    responses=ERRORS,
)
async def reject_run(
    principal: ScopedOperator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
    run_id: RunId,
    body: RejectBody,
) -> JSONResponse:
    """The run's `approval` step fails with `rejected by <actor>: <reason>` and the run
    ends as its runbook says (a failure, unless the step continues on failure). Any
    operator who may see the run may reject it, its requester included."""
    return await _decide(
        principal,
        context,
        uow,
        idem,
        run_id,
        Decision.REJECTED,
        body.reason,
        f"{V1}/runs/{run_id}/reject",
    )
