"""How a runbook's run ended: ``maintenance.*`` and ``playbook.*``, with the runbook's
name, the worst level of its findings and a short summary (the kind's finish hook adds
them to the run's announcement)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from app.core.paths import V1
from app.outbox.catalog import EventType
from app.runs.events import RunEventData, RunResourceLinks
from app.runs.models import Level

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


async def on_finish(uow: UnitOfWork, context: AppContext, run: Run) -> dict[str, Any]:
    """What a runbook run's end adds to its announcement (the run is read already)."""
    result = run.result or {}
    summary = result.get("summary")
    return {
        "runbook": str((run.params or {}).get("runbook", "")),
        "level": result.get("level"),
        "summary": summary[:SUMMARY_CHARS] if isinstance(summary, str) else None,
        "links": links(run.id),
    }


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


def _types(kind: str, runbook: str, what: str) -> tuple[EventType, ...]:
    return (
        EventType(
            f"{kind}.succeeded",
            f"A {what} ran to its end (its findings' level may still warn).",
            RunbookRunEventData,
            _example(kind, runbook, "success", None),
        ),
        EventType(
            f"{kind}.failed",
            f"A {what} stopped at a step that failed (or was rejected at an approval).",
            RunbookRunEventData,
            _example(kind, runbook, "failure", "/problems/step-failed"),
        ),
        EventType(
            f"{kind}.cancelled",
            f"A {what} was cancelled.",
            RunbookRunEventData,
            _example(kind, runbook, "cancelled", "/problems/cancelled"),
        ),
    )


TYPES = (
    *_types("maintenance", "weekly-log-cleanup", "maintenance runbook"),
    *_types("playbook", "db-long-running-queries", "troubleshooting playbook"),
)
