"""From a runbook and checked parameters to the run's steps, and how those steps sum up.

A step's arguments are its ``with`` with every ``{param: NAME}`` replaced by the typed
value (:func:`app.runbooks.catalog.substitute`); a step whose ``when`` does not hold is
left out of the plan. Each step keeps its ``on_failure`` (``abort`` stops the run,
``continue`` goes on) and its idempotency (declared, else: a writing ``sql`` step is not,
else what its action declares).
"""

from __future__ import annotations

from typing import Any

from app.runbooks.catalog import Runbook, substitute
from app.runs.actions import worst
from app.runs.kinds import Ending, Summary
from app.runs.models import Level, RunStatus, Step, StepStatus
from app.runs.service import StepSpec

MAX_SUMMARY = 4000


def steps(runbook: Runbook, values: dict[str, Any]) -> list[StepSpec]:
    planned = []
    for step in runbook.spec.steps:
        if step.when is not None and not step.when.holds(values):
            continue
        arguments = substitute(step.with_, values)
        idempotent = step.idempotent
        if idempotent is None and step.action == "sql" and arguments.get("write"):
            idempotent = False
        planned.append(
            StepSpec(
                step.name,
                step.action,
                arguments,
                idempotent,
                step.timeout_seconds,
                stop_on_failure=step.on_failure == "abort",
            )
        )
    return planned


def _summary_of(step: Step) -> str:
    result = step.result or {}
    text = result.get("summary") if isinstance(result, dict) else None
    if step.status == StepStatus.FAILURE:
        text = f"failed: {step.error or text or 'no detail'}"
    elif step.status == StepStatus.SKIPPED:
        text = "skipped"
    elif step.status == StepStatus.CANCELLED:
        text = "cancelled"
    elif not text:
        text = (step.output or "").strip().splitlines()[-1:] or [step.status]
        text = text[0]
    return str(text)[:300]


def finalize(steps: list[Step], ending: Ending) -> Summary:
    """Failure when a step that stops the run failed (its problem type, when the step
    gave one: ``/problems/approval-rejected``…); success otherwise, with the worst level
    of the findings. The result holds each step's structured findings and a human
    summary, one line a step."""
    levels = [Level(s.level) for s in steps if s.level]
    failed_continue = [
        s.name for s in steps if s.status == StepStatus.FAILURE and not s.stop_on_failure
    ]
    overall = worst(Level.OK, *levels)
    if failed_continue:
        overall = worst(overall, Level.WARNING)
    lines = [f"{s.position + 1}. {s.name}: {_summary_of(s)}" for s in steps]
    summary = "\n".join(lines)
    if len(summary) > MAX_SUMMARY:
        summary = summary[: MAX_SUMMARY - 1] + "…"
    result: dict[str, Any] = {
        "level": overall.value,
        "summary": summary,
        "steps": {
            s.name: {
                "status": s.status,
                "level": s.level,
                "result": s.result or {},
            }
            for s in steps
        },
        "failed_steps": [s.name for s in steps if s.status == StepStatus.FAILURE],
    }
    stopped = ending.stopped_at
    if stopped is None:
        stopped = next(
            (s for s in steps if s.status == StepStatus.FAILURE and s.stop_on_failure), None
        )
    if stopped is not None:
        given = (stopped.result or {}).get("problem") if isinstance(stopped.result, dict) else None
        timed_out = bool(stopped.result and stopped.result.get("timeout"))
        problem = (
            given
            if isinstance(given, str) and given.startswith("/problems/")
            else "/problems/timeout"
            if timed_out
            else "/problems/step-failed"
        )
        detail = f"step {stopped.position} ({stopped.name}) failed: {stopped.error or 'no detail'}"
        return RunStatus.FAILURE, problem, detail, result
    return RunStatus.SUCCESS, None, None, result
