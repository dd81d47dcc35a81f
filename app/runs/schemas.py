"""What clients see of runs and their steps."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.core.redaction import redact_text, redact_value
from app.core.schemas import RequestModel
from app.runs.models import Phase, Run, RunKind, RunStatus, Step, StepStatus

FAILURE_TITLES = {
    "/problems/step-failed": "A step failed",
    "/problems/timeout": "A step timed out",
    "/problems/interrupted": "Interrupted",
    "/problems/cancelled": "Cancelled",
    "/problems/health-check-failed": "Health check failed",
    "/problems/unsupported-run-kind": "Unsupported run kind",
}


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
    idempotent: bool
    attempts: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_ms: float | None
    output: str | None
    output_truncated: bool
    result: dict[str, Any] | None
    error: str | None


class RunLinks(BaseModel):
    self: str
    events: str


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
    cancel_requested: bool
    result: dict[str, Any] | None
    failure: RunFailure | None
    steps: list[StepOut]
    links: RunLinks


class RunList(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


class PlannedStep(BaseModel):
    position: int
    name: str
    action: str
    params: dict[str, Any]
    idempotent: bool
    timeout_seconds: float
    stop_on_failure: bool
    phase: Phase


class DryRun(BaseModel):
    """What would run: nothing was written, queued or executed."""

    dry_run: Literal[True] = True
    kind: RunKind
    steps: list[PlannedStep]


class RunCreate(RequestModel):
    dry_run: bool = Field(default=False, description="Return the plan; execute nothing.")


def _text(value: str | None) -> str | None:
    """Steps store their output scrubbed already (:mod:`app.runs.engine`); the rule is
    applied again as rows become responses, for rows written before it existed."""
    return redact_text(value) if value is not None else None


def step_out(step: Step) -> StepOut:
    duration = (
        round((step.finished_at - step.started_at).total_seconds() * 1000, 1)
        if step.started_at and step.finished_at
        else None
    )
    return StepOut(
        position=step.position,
        name=step.name,
        action=step.action,
        status=StepStatus(step.status),
        phase=Phase(step.phase),
        level=step.level,
        idempotent=step.idempotent,
        attempts=step.attempts,
        started_at=step.started_at,
        finished_at=step.finished_at,
        duration_ms=duration,
        output=_text(step.output),
        output_truncated=step.output_truncated,
        result=redact_value(step.result),
        error=_text(step.error),
    )


def run_out(run: Run, self_path: str | None = None) -> RunOut:
    failure = (
        RunFailure(
            type=run.failure_type,
            title=FAILURE_TITLES.get(run.failure_type, "Run did not succeed"),
            detail=_text(run.failure_detail),
        )
        if run.failure_type
        else None
    )
    return RunOut(
        id=run.id,
        kind=RunKind(run.kind),
        status=RunStatus(run.status),
        environment=run.environment,
        requested_by=run.requested_by,
        created_at=run.created_at,
        updated_at=run.updated_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        attempt=run.lease_epoch,
        cancel_requested=run.cancel_requested_at is not None,
        result=redact_value(run.result),
        failure=failure,
        steps=[step_out(s) for s in sorted(run.steps, key=lambda s: s.position)],
        links=RunLinks(self=self_path or f"/v1/runs/{run.id}", events=f"/v1/runs/{run.id}/events"),
    )
