"""The events of the runbook catalog's steps: an approval asked for and answered, and a
notification a runbook sends (each written in the transaction of what it announces)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from app.outbox.catalog import EventData, EventLinks, EventType
from app.runs.events import run_links

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
