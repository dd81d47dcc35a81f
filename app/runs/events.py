"""The events of runs: ``run.queued`` for every run, and the data every run's end
announces (``<kind>.<succeeded|failed|cancelled|rolled_back>``), which the domains that
register a kind extend with their own fields (see :func:`app.runs.service.finish_announcement`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.paths import V1
from app.outbox.catalog import EventData, EventLinks, EventType
from app.runs.models import RunKind, RunStatus


def run_links(run_id: str) -> dict[str, str]:
    return {"self": f"{V1}/runs/{run_id}"}


class RunResourceLinks(EventLinks):
    """The links of a resource that is a run of its kind (a deployment, a health check)."""

    run: str = Field(description="The run behind it (its steps, its progress events).")


class RunQueuedData(EventData):
    id: str = Field(description="The run's id.")
    kind: RunKind
    environment: str | None = Field(description="The environment it changes, if any.")
    status: Literal["queued"]
    links: EventLinks


class RunEventData(EventData):
    """What the end of every run announces (a domain's events about its runs say the
    same, and add their own fields)."""

    id: str = Field(description="The run's id.")
    kind: str = Field(description="The run's kind.")
    environment: str | None = Field(description="The environment it changes, if any.")
    status: RunStatus = Field(
        description="Its status at the event: how it ended (`*.failed`: `failure` or "
        "`error`), or for the events before its end `queued`, `in_progress`."
    )
    failure_type: str | None = Field(
        description="The problem type (`/problems/...`) of its failure or cancellation, else null."
    )
    links: EventLinks


RUN_QUEUED = EventType(
    "run.queued",
    "A run of any kind was requested and waits for a worker.",
    RunQueuedData,
    example={
        "id": "0193c6e8-7a1b-7c3e-9f10-2b4d5e6f7a8b",
        "kind": "health_check",
        "environment": None,
        "status": "queued",
        "links": run_links("0193c6e8-7a1b-7c3e-9f10-2b4d5e6f7a8b"),
    },
)
