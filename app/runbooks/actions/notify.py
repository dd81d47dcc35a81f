"""The ``notify`` step action: a runbook says something to the people who follow it.

It writes the outbox event ``runbook.notification`` (run, runbook, environment,
severity, message), which webhooks deliver (chat, paging), and a progress event
``notification.sent`` in the same transaction. That progress event is its mark: a step
run again after its worker died (the mark committed, the step's end not yet) finds it and
sends nothing twice, so the action is idempotent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from sqlalchemy import select

from app.core.redaction import redact_text
from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES
from app.outbox.service import add_event
from app.runbooks import approvals, events
from app.runs import service as run_service
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome
from app.runs.events import run_links
from app.runs.models import Run, RunEvent, StepStatus

SENT = "notification.sent"


class NotifyParams(Params):
    message: str = Field(min_length=1, max_length=2000)
    severity: Literal["info", "warning", "critical"] = "info"


async def notify(params: NotifyParams, ctx: StepContext) -> StepOutcome:
    message = redact_text(params.message)
    summary = f"{params.severity}: {message}"
    async with ctx.context.unit_of_work() as uow:
        session = uow.session
        marks = await session.scalars(
            select(RunEvent.data).where(RunEvent.run_id == ctx.run_id, RunEvent.type == SENT)
        )
        if any(isinstance(d, dict) and d.get("position") == ctx.position for d in marks):
            return StepOutcome(
                StepStatus.SUCCESS, f"sent already: {summary}", data={"summary": summary}
            )
        run = await session.get_one(Run, ctx.run_id)
        event = await add_event(
            session,
            "runbook.notification",
            {
                "id": run.id,
                "runbook": approvals.runbook_of(run),
                "environment": run.environment,
                "position": ctx.position,
                "severity": params.severity,
                "message": message,
                "links": run_links(run.id),
            },
        )
        await run_service.append_event(
            session,
            ctx.run_id,
            SENT,
            {"position": ctx.position, "severity": params.severity, "event_id": event.id},
        )
    await ctx.context.notifier.publish(ctx.run_id)
    return StepOutcome(
        StepStatus.SUCCESS,
        summary,
        data={"summary": summary, "severity": params.severity, "event_id": event.id},
    )


def register(registry: Registry) -> None:
    registry[ACTIONS].add("notify", Action(NotifyParams, notify, idempotent=True))
    registry[EVENT_TYPES].add(events.RUNBOOK_NOTIFICATION.name, events.RUNBOOK_NOTIFICATION)
