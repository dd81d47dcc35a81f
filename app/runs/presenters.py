"""Runs, their steps and their plans as clients see them: rows become responses here,
with the secrets rule (:mod:`app.core.redaction`) applied once more on the way out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.core.redaction import redact_text, redact_value
from app.runs.models import Phase, Run, RunKind, RunStatus, Step, StepStatus
from app.runs.schemas import (
    FAILURE_TITLES,
    AwaitingApproval,
    RunbookRef,
    RunFailure,
    RunLinks,
    RunOut,
    StepOut,
)
from app.runs.service import StepSpec


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


def _runbook(run: Run) -> RunbookRef | None:
    name = (run.params or {}).get("runbook")
    if not isinstance(name, str):
        return None
    parameters = run.params.get("parameters")
    return RunbookRef(
        name=name, parameters=redact_value(parameters) if isinstance(parameters, dict) else {}
    )


# The step action that waits for an operator's answer (app.runbooks.actions.approval):
# its name and its ``prompt`` parameter are the contract.
APPROVAL_ACTION = "approval"


def awaiting_approval(run: Run) -> AwaitingApproval | None:
    """The running ``approval`` step of a running run (its answer may have just been
    given: the step ends within a moment)."""
    if run.status != RunStatus.IN_PROGRESS:
        return None
    for step in run.steps:
        if step.action == APPROVAL_ACTION and step.status == StepStatus.IN_PROGRESS:
            prompt = (step.params or {}).get("prompt")
            return AwaitingApproval(
                position=step.position,
                name=step.name,
                prompt=redact_text(prompt) if isinstance(prompt, str) else "",
            )
    return None


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
        runbook=_runbook(run),
        steps=[step_out(s) for s in sorted(run.steps, key=lambda s: s.position)],
        awaiting_approval=awaiting_approval(run),
        links=RunLinks(self=self_path or f"/v1/runs/{run.id}", events=f"/v1/runs/{run.id}/events"),
    )


def plan_view(steps: Sequence[StepSpec], *, reveal: bool) -> list[dict[str, Any]]:
    """The concrete plan a dry run returns; unless ``reveal`` (admins, who wrote the
    configuration), with the secrets of its parameters hidden (:mod:`app.core.redaction`):
    environment values, URL userinfo, secret flags, credential headers."""
    return [
        {
            "position": position,
            "name": spec.name,
            "action": spec.action,
            "params": spec.params if reveal else redact_value(spec.params),
            "idempotent": spec.idempotent,
            "timeout_seconds": spec.timeout_seconds,
            "stop_on_failure": spec.stop_on_failure,
            "phase": spec.phase.value,
        }
        for position, spec in enumerate(steps)
    ]
