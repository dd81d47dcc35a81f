"""Approvals: the rules of answering a run's ``approval`` step.

The step (:mod:`app.runbooks.actions.approval`) announces what it waits for with a
progress event ``approval.requested`` (position, prompt, role, expiry) and an outbox
event ``runbook.approval_requested``; an operator answers with
``POST /v1/runs/{id}/approve`` or ``/reject``, which writes the :class:`RunApproval` row,
an audit record (``run.approve``/``run.reject``), the progress event ``approval.decided``
and the outbox event ``runbook.approval_decided`` in one transaction, then wakes the
waiting step.

- **Which answer counts**: the first. The row's unique constraint ``(run_id, position)``
  decides a race; the loser gets 409 ``no-pending-approval``.
- **Who may answer**: a token of the step's ``approvers_role`` (operator by default, or
  admin) that may see the run (a token restricted to another environment gets 404).
- **Four eyes**: the caller who requested the run may reject it (call it off) but not
  approve it, unless an admin (403 ``approval-by-requester``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.errors import Denial, Forbidden
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.core.errors import AppError
from app.core.redaction import redact_text
from app.outbox.service import add_event
from app.runbooks.models import Decision, RunApproval
from app.runs import service as run_service
from app.runs.events import run_links
from app.runs.models import Phase, Run, RunEvent, RunStatus, Step, StepStatus
from app.runs.presenters import APPROVAL_ACTION

ACTION = APPROVAL_ACTION  # the step action that waits for an answer
REQUESTED = "approval.requested"  # its progress event
DECIDED = "approval.decided"


class NoPendingApproval(AppError):
    type = "/problems/no-pending-approval"
    title = "No approval is pending"
    status = 409


class ApprovalByRequester(Forbidden):
    type = "/problems/approval-by-requester"
    title = "The requester of a run may not approve it"


@dataclass(frozen=True)
class Request:
    """What an ``approval.requested`` event says."""

    position: int
    prompt: str
    approvers_role: Role
    expires_at: dt.datetime

    @classmethod
    def of(cls, data: dict[str, Any]) -> Request:
        return cls(
            position=int(data["position"]),
            prompt=str(data.get("prompt", "")),
            approvers_role=Role(data.get("approvers_role", Role.OPERATOR.value)),
            expires_at=dt.datetime.fromisoformat(str(data["expires_at"])),
        )


async def request_of(session: AsyncSession, run_id: str, position: int) -> Request | None:
    """The step's request for an answer (the first, when a resumed step asked again)."""
    rows = await session.scalars(
        select(RunEvent.data)
        .where(RunEvent.run_id == run_id, RunEvent.type == REQUESTED)
        .order_by(RunEvent.seq)
    )
    for data in rows:
        if isinstance(data, dict) and data.get("position") == position:
            return Request.of(data)
    return None


async def answer_of(session: AsyncSession, run_id: str, position: int) -> RunApproval | None:
    row: RunApproval | None = await session.scalar(
        select(RunApproval).where(RunApproval.run_id == run_id, RunApproval.position == position)
    )
    return row


def pending_step(run: Run) -> Step | None:
    """The approval step the run is at (running, its step in progress), if any."""
    if run.status != RunStatus.IN_PROGRESS:
        return None
    for step in run.steps:
        if (
            step.action == ACTION
            and step.status == StepStatus.IN_PROGRESS
            and step.phase == Phase.MAIN
        ):
            return step
    return None


def _approvers_role(step: Step) -> Role:
    value = (step.params or {}).get("approvers_role", Role.OPERATOR.value)
    try:
        return Role(value)
    except ValueError:
        return Role.ADMIN  # unknown: the strictest


def runbook_of(run: Run) -> str | None:
    name = (run.params or {}).get("runbook")
    return name if isinstance(name, str) else None


async def decide(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    run_id: str,
    decision: Decision,
    reason: str,
    *,
    path: str,
) -> RunApproval:
    """Record ``principal``'s answer to the run's pending approval (see the module)."""
    session = uow.session
    run = await run_service.get_run(session, run_id, principal)
    step = pending_step(run)
    if step is None:
        raise NoPendingApproval(f"Run {run_id} is not waiting for an approval")
    # The step is in progress but may not have recorded its request yet (a moment after
    # it started): its own parameters say who answers, and it has not expired.
    request = await request_of(session, run.id, step.position)
    approvers_role = request.approvers_role if request is not None else _approvers_role(step)
    if not principal.role.includes(approvers_role):
        raise Forbidden(
            f"step {step.position} ({step.name}) is answered by the role "
            f"{approvers_role.value} or above",
            denial=_denial(principal, "approver role", path),
        )
    if (
        decision == Decision.APPROVED
        and run.requested_by == principal.actor
        and principal.role != Role.ADMIN
    ):
        raise ApprovalByRequester(
            "the run was requested with this token; another operator must approve it",
            denial=_denial(principal, "approval by the requester", path),
        )
    if request is not None and utcnow() >= request.expires_at:
        raise NoPendingApproval(f"the approval of run {run_id} expired; it ends without one")
    if await answer_of(session, run.id, step.position) is not None:
        raise NoPendingApproval(f"the approval of run {run_id} was answered already")
    answer = RunApproval(
        run_id=run.id,
        position=step.position,
        decision=decision.value,
        decided_by=principal.actor,
        reason=redact_text(reason),
        decided_at=utcnow(),
    )
    session.add(answer)
    try:
        await session.flush()
    except IntegrityError:
        raise NoPendingApproval(f"the approval of run {run_id} was answered already") from None
    await run_service.append_event(
        session,
        run.id,
        DECIDED,
        {
            "position": step.position,
            "name": step.name,
            "decision": decision.value,
            "by": principal.actor,
            "reason": answer.reason,
        },
    )
    await audit_service.record(
        session,
        principal,
        action="run.approve" if decision == Decision.APPROVED else "run.reject",
        resource_type="run",
        resource_id=run.id,
        summary={
            "kind": run.kind,
            "position": step.position,
            "step": step.name,
            "reason": answer.reason,
        },
    )
    await add_event(
        session,
        "runbook.approval_decided",
        {
            "id": run.id,
            "kind": run.kind,
            "environment": run.environment,
            "runbook": runbook_of(run),
            "position": step.position,
            "step": step.name,
            "decision": decision.value,
            "decided_by": principal.actor,
            "reason": answer.reason,
            "links": run_links(run.id),
        },
    )

    async def _wake() -> None:
        await context.notifier.publish(run_id)

    uow.after_commit(_wake)
    return answer


def _denial(principal: Principal, reason: str, path: str) -> Denial:
    return Denial(
        principal=principal,
        reason=reason,
        method="POST",
        path=path,
        client_address=principal.client_address,
        request_id=principal.request_id,
    )
