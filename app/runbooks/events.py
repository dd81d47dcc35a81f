"""The events of the runbook catalog: how a runbook's run ended (``maintenance.*`` and
``playbook.*``, with the runbook's name, the worst level of its findings and a short
summary, added by the kind's finish hook to the run's announcement); an approval asked
for and answered, and a notification a runbook sends (each written in the transaction
of what it announces)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from app.core.paths import V1
from app.outbox.catalog import EventData, EventLinks, EventType
from app.outbox.service import add_event
from app.runs.events import RunEventData, RunResourceLinks, run_links
from app.runs.models import Level, RunStatus
from app.runs.service import finish_announcement

if TYPE_CHECKING:
    from app.core.context import AppContext
    from app.core.db import UnitOfWork
    from app.runs.models import Run

SUMMARY_CHARS = 1000


class RunbookRunEventData(RunEventData):
    links: RunResourceLinks
    kind: Literal["maintenance", "playbook"]
    runbook: str = Field(description="The runbook's name.")
    level: Level | None = Field(
        description="The worst level of its findings; null when it was cancelled."
    )
    summary: str | None = Field(description="One line a step (shortened); null when cancelled.")


def links(run_id: str) -> dict[str, str]:
    return {"self": f"{V1}/runs/{run_id}", "run": f"{V1}/runs/{run_id}"}


async def on_finish(uow: UnitOfWork, context: AppContext, run: Run) -> None:
    """Announce a runbook run's end as ``runbook.<succeeded|failed|cancelled>`` (not under
    its kind: ``maintenance.*`` names the maintenance windows' events), in the
    transaction that ends it."""
    result = run.result or {}
    summary = result.get("summary")
    extra = {
        "runbook": str((run.params or {}).get("runbook", "")),
        "level": result.get("level"),
        "summary": summary[:SUMMARY_CHARS] if isinstance(summary, str) else None,
        "links": links(run.id),
    }
    status = RunStatus(run.status)
    _, data = finish_announcement(run, status, run.failure_type, extra)
    if status == RunStatus.SUCCESS:
        await add_event(uow.session, "runbook.succeeded", data)
    elif status == RunStatus.CANCELLED:
        await add_event(uow.session, "runbook.cancelled", data)
    else:
        await add_event(uow.session, "runbook.failed", data)


_ID = "0193c6e8-7a1b-7c3e-9f10-2b4d5e6f7a8b"


def _example(kind: str, runbook: str, status: str, failure: str | None) -> dict[str, Any]:
    return {
        "id": _ID,
        "kind": kind,
        "environment": "production",
        "status": status,
        "failure_type": failure,
        "runbook": runbook,
        "level": None if status == "cancelled" else "warning" if failure is None else "critical",
        "summary": None if status == "cancelled" else "1. active connections: 12 of 100",
        "links": links(_ID),
    }


TYPES = (
    EventType(
        "runbook.succeeded",
        "A runbook's run (maintenance or playbook) ran to its end; `level` says whether its "
        "findings warn.",
        RunbookRunEventData,
        _example("maintenance", "daily-backup-status", "success", None),
    ),
    EventType(
        "runbook.failed",
        "A runbook's run stopped at a step that failed (or was rejected at an approval).",
        RunbookRunEventData,
        _example("playbook", "db-long-running-queries", "failure", "/problems/step-failed"),
    ),
    EventType(
        "runbook.cancelled",
        "A runbook's run was cancelled.",
        RunbookRunEventData,
        _example("playbook", "service-down", "cancelled", "/problems/cancelled"),
    ),
)


# -- approvals and notifications -------------------------------------------------------

_RUN = "0193c6e8-7a1b-7c3e-9f10-2b4d5e6f7a8b"


class ApprovalRequestedData(EventData):
    id: str = Field(description="The run's id.")
    kind: str = Field(description="The run's kind.")
    environment: str | None
    runbook: str | None = Field(description="The runbook the run executes, if any.")
    position: int = Field(description="The position of the step that waits.")
    step: str = Field(description="The step's name.")
    prompt: str
    approvers_role: Literal["operator", "admin"]
    expires_at: dt.datetime = Field(description="Without an answer by then, the step fails.")
    links: EventLinks


class ApprovalDecidedData(EventData):
    id: str = Field(description="The run's id.")
    kind: str = Field(description="The run's kind.")
    environment: str | None
    runbook: str | None = Field(description="The runbook the run executes, if any.")
    position: int = Field(description="The position of the step that waited.")
    step: str = Field(description="The step's name.")
    decision: Literal["approved", "rejected"]
    decided_by: str = Field(description="`token:<id>` of the caller who answered.")
    reason: str
    links: EventLinks


class RunbookNotificationData(EventData):
    id: str = Field(description="The run's id.")
    runbook: str | None = Field(description="The runbook the run executes, if any.")
    environment: str | None
    position: int = Field(description="The position of the step that sent it.")
    severity: Literal["info", "warning", "critical"]
    message: str
    links: EventLinks


APPROVAL_REQUESTED = EventType(
    "runbook.approval_requested",
    "A run waits for an operator to approve or reject its next step.",
    ApprovalRequestedData,
    example={
        "id": _RUN,
        "kind": "playbook",
        "environment": "production",
        "runbook": "db-long-running-queries",
        "position": 1,
        "step": "approve ending the queries",
        "prompt": "End the queries listed by the previous step?",
        "approvers_role": "operator",
        "expires_at": "2026-01-01T13:00:00Z",
        "links": run_links(_RUN),
    },
)
APPROVAL_DECIDED = EventType(
    "runbook.approval_decided",
    "A run's approval step was approved or rejected.",
    ApprovalDecidedData,
    example={
        "id": _RUN,
        "kind": "playbook",
        "environment": "production",
        "runbook": "db-long-running-queries",
        "position": 1,
        "step": "approve ending the queries",
        "decision": "approved",
        "decided_by": "token:0193c6e9-0000-7000-8000-000000000001",
        "reason": "checked with the reporting team",
        "links": run_links(_RUN),
    },
)
RUNBOOK_NOTIFICATION = EventType(
    "runbook.notification",
    "A runbook's step sent a message (info, warning or critical).",
    RunbookNotificationData,
    example={
        "id": _RUN,
        "runbook": "db-long-running-queries",
        "environment": "production",
        "position": 3,
        "severity": "warning",
        "message": "2 queries ran longer than 5 minutes and were ended.",
        "links": run_links(_RUN),
    },
)
