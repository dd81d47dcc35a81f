"""The events of health checks: how each ended, with the overall level and the probes
that were critical or warned, announced in the transaction that ends the run (the kind's
finish hook adds them to the run's announcement)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.paths import V1
from app.outbox.catalog import EventType
from app.runs.events import RunEventData, RunResourceLinks
from app.runs.models import Level, RunKind

if TYPE_CHECKING:
    from app.core.context import AppContext
    from app.core.db import UnitOfWork
    from app.runs.models import Run


class HealthCheckSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overall: Level = Field(description="The worst level of its probes.")
    critical: list[str] = Field(description="The probes that were critical or could not run.")
    warning: list[str] = Field(description="The probes that warned.")


class HealthCheckEventData(RunEventData):
    links: RunResourceLinks
    kind: Literal["health_check"]
    summary: HealthCheckSummary | None = Field(
        description="Its probes' outcome; null when it was cancelled."
    )


def links(run_id: str) -> dict[str, str]:
    return {"self": f"{V1}/health-checks/{run_id}", "run": f"{V1}/runs/{run_id}"}


def summary(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The summary of a finished health check's result (:func:`app.health_checks.plan.finalize`)."""
    if not result or "overall" not in result:
        return None
    return {
        "overall": result["overall"],
        "critical": list(result.get("critical", [])),
        "warning": list(result.get("warning", [])),
    }


async def on_finish(uow: UnitOfWork, context: AppContext, run: Run) -> dict[str, Any]:
    """What a health check's end adds to its announcement (no query: the run is read)."""
    return {"summary": summary(run.result), "links": links(run.id)}


_ID = "0193c6e8-7a1b-7c3e-9f10-2b4d5e6f7a8b"


def _example(
    status: str, failure_type: str | None, result: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": _ID,
        "kind": RunKind.HEALTH_CHECK.value,
        "environment": None,
        "status": status,
        "failure_type": failure_type,
        "summary": result,
        "links": links(_ID),
    }


TYPES = (
    EventType(
        "health_check.succeeded",
        "A health check found no probe critical (`summary.overall`: `ok` or `warning`).",
        HealthCheckEventData,
        _example("success", None, {"overall": "warning", "critical": [], "warning": ["memory"]}),
    ),
    EventType(
        "health_check.failed",
        "A health check found a probe critical, or one that could not run.",
        HealthCheckEventData,
        _example(
            "failure",
            "/problems/health-check-failed",
            {"overall": "critical", "critical": ["service production/backend"], "warning": []},
        ),
    ),
    EventType(
        "health_check.cancelled",
        "A health check was cancelled.",
        HealthCheckEventData,
        _example("cancelled", "/problems/cancelled", None),
    ),
)
