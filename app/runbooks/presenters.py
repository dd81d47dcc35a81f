"""Runbook → response."""

from __future__ import annotations

from typing import Any

from app.core.redaction import redact_value
from app.runbooks.catalog import Runbook
from app.runbooks.schemas import DefaultScheduleOut, RunbookOut, RunbookStepOut, RunbookSummary


def _summary_fields(runbook: Runbook) -> dict[str, Any]:
    spec = runbook.spec
    schedule = spec.schedule
    return {
        "name": spec.name,
        "title": spec.title,
        "description": spec.description,
        "kind": spec.kind,
        "role": spec.required_role,
        "idempotent": spec.idempotent,
        "writes": spec.writes,
        "seed": spec.seed,
        "parameters": spec.parameters_schema(),
        "schedule": DefaultScheduleOut(**schedule.model_dump()) if schedule else None,
    }


def summary(runbook: Runbook) -> RunbookSummary:
    return RunbookSummary(**_summary_fields(runbook))


def detail(runbook: Runbook) -> RunbookOut:
    steps = [
        RunbookStepOut(
            name=step.name,
            action=step.action,
            # Every reader (viewers too) sees the steps: the one redaction rule applies,
            # as to a dry run's plan (admins read the catalog's files).
            with_=redact_value(step.with_),
            on_failure=step.on_failure,
            idempotent=step.idempotent,
            timeout_seconds=step.timeout_seconds,
            when=step.when.describe() if step.when else None,
        )
        for step in runbook.spec.steps
    ]
    return RunbookOut(**_summary_fields(runbook), steps=steps, source=runbook.source)
