"""What clients see of runs and their steps."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool

from app.core.schemas import RequestModel
from app.runs.models import Phase, RunKind, RunStatus, StepStatus
from app.runs.vocabulary import FAILURE_TITLES as FAILURE_TITLES


class RunFailure(BaseModel):
    """Why a run did not succeed, in problem terms a pipeline can act on."""

    type: str
    title: str
    detail: str | None


class StepOut(BaseModel):
    position: int
    name: str
    action: str
    status: StepStatus
    phase: Phase = Field(description="`rollback` steps undo `main` ones after a failure.")
    level: Literal["ok", "warning", "critical"] | None
    idempotent: StrictBool
    attempts: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_ms: float | None
    output: str | None
    output_truncated: StrictBool
    result: dict[str, Any] | None
    error: str | None


class AwaitingApproval(BaseModel):
    """The step a run waits at until an operator answers (``POST /v1/runs/{id}/approve``
    or ``/reject``)."""

    position: int
    name: str
    prompt: str


class RunLinks(BaseModel):
    self: str
    events: str


class RunbookRef(BaseModel):
    """The catalog runbook a ``maintenance`` or ``playbook`` run executes."""

    name: str
    parameters: dict[str, Any] = Field(description="With the defaults filled in.")


class RunOut(BaseModel):
    id: str
    kind: RunKind
    status: RunStatus
    environment: str | None
    requested_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempt: int = Field(description="How many times a worker has claimed the run.")
    cancel_requested: StrictBool
    result: dict[str, Any] | None
    failure: RunFailure | None
    runbook: RunbookRef | None = Field(
        default=None, description="The runbook it runs (maintenance and playbook runs)."
    )
    steps: list[StepOut]
    awaiting_approval: AwaitingApproval | None = Field(
        description="The `approval` step the run waits at (answer it with "
        "`POST /v1/runs/{id}/approve` or `/reject`); null when it waits for none."
    )
    links: RunLinks


class RunList(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


class PlannedStep(BaseModel):
    position: int
    name: str
    action: str
    params: dict[str, Any]
    idempotent: StrictBool
    timeout_seconds: float
    stop_on_failure: StrictBool
    phase: Phase


class DryRun(BaseModel):
    """What would run: nothing was written, queued or executed."""

    dry_run: Literal[True] = True
    kind: RunKind
    steps: list[PlannedStep]


class RunCreate(RequestModel):
    dry_run: StrictBool = Field(default=False, description="Return the plan; execute nothing.")
