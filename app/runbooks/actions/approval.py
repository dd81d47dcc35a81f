"""The ``approval`` step action: the run pauses until an operator answers.

The step asks once (a progress event ``approval.requested`` that ``GET /v1/runs/{id}``'s
``awaiting_approval`` and the SSE stream show, and an outbox event
``runbook.approval_requested`` for chat and paging), then reads the answer
(:class:`~app.runbooks.models.RunApproval`, written by ``POST /v1/runs/{id}/approve`` or
``/reject``: :mod:`app.runbooks.approvals`) about every second, woken at once by the
run's change notification. Approved: success. Rejected: failure ``rejected by <actor>:
<reason>``. No answer by the expiry: failure ``no answer within N s``. A cancellation
requested meanwhile ends the wait (failure ``cancelled while waiting for approval``).

It holds no database connection while it waits. It is idempotent: a resumed run asks
again only if it never asked, keeps the first expiry and reads the stored answer.

The step's own ``timeout_seconds`` (default 300 s) must be longer than the approval's
``timeout_seconds`` (default 3600 s), or the engine ends the step first (``timed out``).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field
from sqlalchemy import select

from app.core.db import utcnow
from app.core.notify import wait_for
from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES
from app.outbox.service import add_event
from app.runbooks import approvals, events
from app.runbooks.models import Decision, RunApproval
from app.runs import service as run_service
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome
from app.runs.events import run_links
from app.runs.models import Run, Step, StepStatus

POLL_SECONDS = 1.0


class ApprovalParams(Params):
    prompt: str = Field(min_length=1, max_length=2000, description="What the approver decides.")
    timeout_seconds: float = Field(
        default=3600,
        gt=0,
        le=7 * 24 * 3600,
        description="How long to wait for an answer; the step's own timeout must be longer.",
    )
    approvers_role: Literal["operator", "admin"] = "operator"


async def _ask(params: ApprovalParams, ctx: StepContext) -> tuple[dt.datetime, RunApproval | None]:
    """Ask for an answer unless the step asked already (a resumed run); the expiry, and
    the answer if there is one."""
    async with ctx.context.unit_of_work() as uow:
        session = uow.session
        answer = await approvals.answer_of(session, ctx.run_id, ctx.position)
        asked = await approvals.request_of(session, ctx.run_id, ctx.position)
        if asked is not None or answer is not None:
            expires = asked.expires_at if asked is not None else utcnow()
            return expires, answer
        run = await session.get_one(Run, ctx.run_id)
        name = await session.scalar(
            select(Step.name).where(Step.run_id == ctx.run_id, Step.position == ctx.position)
        )
        expires = utcnow() + dt.timedelta(seconds=params.timeout_seconds)
        await run_service.append_event(
            session,
            ctx.run_id,
            approvals.REQUESTED,
            {
                "position": ctx.position,
                "name": name,
                "prompt": params.prompt,
                "approvers_role": params.approvers_role,
                "timeout_seconds": params.timeout_seconds,
                "expires_at": expires.isoformat(),
            },
        )
        await add_event(
            session,
            "runbook.approval_requested",
            {
                "id": run.id,
                "kind": run.kind,
                "environment": run.environment,
                "runbook": approvals.runbook_of(run),
                "position": ctx.position,
                "step": name or "",
                "prompt": params.prompt,
                "approvers_role": params.approvers_role,
                "expires_at": expires.isoformat(),
                "links": run_links(run.id),
            },
        )
    await ctx.context.notifier.publish(ctx.run_id)
    return expires, None


async def _look(ctx: StepContext) -> tuple[RunApproval | None, bool]:
    """The answer, and whether cancellation of the run was requested."""
    async with ctx.context.sessionmaker() as session:
        answer = await approvals.answer_of(session, ctx.run_id, ctx.position)
        cancel = await session.scalar(select(Run.cancel_requested_at).where(Run.id == ctx.run_id))
    return answer, cancel is not None


def who(actor: str) -> str:
    """An actor as step text shows it: ``token <id>`` (``token:<id>`` reads as a secret
    to the redaction rule, which step output and data go through)."""
    return actor.replace(":", " ", 1) if actor.startswith("token:") else actor


def _outcome(answer: RunApproval) -> StepOutcome:
    by = who(answer.decided_by)
    data = {
        "decision": answer.decision,
        "decided_by": by,
        "reason": answer.reason,
        "decided_at": answer.decided_at.isoformat(),
    }
    said = f": {answer.reason}" if answer.reason else ""
    if answer.decision == Decision.APPROVED:
        summary = f"approved by {by}{said}"
        return StepOutcome(StepStatus.SUCCESS, summary, None, {**data, "summary": summary})
    summary = f"rejected by {by}{said}"
    return StepOutcome(
        StepStatus.FAILURE, summary, None, {**data, "summary": summary}, error=summary
    )


async def approval(params: ApprovalParams, ctx: StepContext) -> StepOutcome:
    expires, answer = await _ask(params, ctx)
    if answer is not None:
        return _outcome(answer)
    await ctx.log(f"waiting for approval ({params.approvers_role}): {params.prompt}")
    with ctx.context.notifier.watch(ctx.run_id) as changed:
        while True:
            changed.clear()
            answer, cancelled = await _look(ctx)
            if answer is not None:
                return _outcome(answer)
            if cancelled:
                summary = "cancelled while waiting for approval"
                return StepOutcome(
                    StepStatus.FAILURE, summary, data={"summary": summary}, error=summary
                )
            remaining = (expires - utcnow()).total_seconds()
            if remaining <= 0:
                summary = f"no answer within {params.timeout_seconds:g} s"
                return StepOutcome(
                    StepStatus.FAILURE,
                    summary,
                    data={"summary": summary, "timeout": True},
                    error=summary,
                )
            await wait_for(changed, min(POLL_SECONDS, remaining))


def register(registry: Registry) -> None:
    registry[ACTIONS].add(approvals.ACTION, Action(ApprovalParams, approval, idempotent=True))
    registry[EVENT_TYPES].add(events.APPROVAL_REQUESTED.name, events.APPROVAL_REQUESTED)
    registry[EVENT_TYPES].add(events.APPROVAL_DECIDED.name, events.APPROVAL_DECIDED)
