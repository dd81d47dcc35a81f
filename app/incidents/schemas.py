"""Requests and responses of ``/v1/incidents``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, StringConstraints

from app.components.vocabulary import ComponentStatus, Impact, IncidentStatus, Severity
from app.core.schemas import MULTILINE, MULTILINE_NOTE, PRINTABLE, RequestModel
from app.deployments.schemas import DeployedService
from app.runs.models import RunStatus

ID = r"^[0-9A-Za-z_-]{1,36}$"
Id = Annotated[str, StringConstraints(pattern=ID, max_length=36)]
Title = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=PRINTABLE)]
Person = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=PRINTABLE)]
Message = Annotated[str, StringConstraints(min_length=1, max_length=5000, pattern=MULTILINE)]
OpenStatus = Literal["investigating", "identified", "monitoring", "resolved"]
Visibility = Literal["public", "internal"]


class ComponentImpact(RequestModel):
    """A component the incident affects and the status it sets it to."""

    component_id: Id
    status: ComponentStatus | None = Field(
        default=None,
        description="Default from the severity: P0 `major_outage`, P1 `partial_outage`, P2 "
        "and P3 `degraded_performance`.",
    )


Components = Annotated[
    list[ComponentImpact],
    Field(max_length=50, description="A component named twice: the last entry counts."),
]


class IncidentCreate(RequestModel):
    title: Title
    severity: Severity
    components: Components = Field(default_factory=list)
    message: Message | None = Field(
        default=None,
        description=f"The first public update (default: a generic one). {MULTILINE_NOTE}",
    )
    commander: Person | None = Field(default=None, description="Who leads the response.")
    acknowledge: StrictBool = Field(
        default=False,
        description="The caller acknowledges it at once (stops the acknowledgement clock).",
    )


class IncidentPatch(RequestModel):
    """Only the fields sent change; `components` replaces the whole list."""

    title: Title | None = None
    severity: Severity | None = None
    commander: Person | None = Field(default=None, description="null clears it.")
    components: Components | None = None


class IncidentUpdateCreate(RequestModel):
    message: Message = Field(description=MULTILINE_NOTE)
    status: OpenStatus | None = Field(
        default=None, description="The status it moves the incident to (default: unchanged)."
    )
    visibility: Visibility = Field(
        default="public",
        description="`public`: shown on the status page and announced; `internal`: operators only.",
    )


class AcknowledgeRequest(RequestModel):
    message: Message | None = Field(default=None, description=f"An internal note. {MULTILINE_NOTE}")


class ResolveRequest(RequestModel):
    message: Message = Field(
        default="This incident has been resolved.",
        description=f"The last public update. {MULTILINE_NOTE}",
    )


class ActionItem(RequestModel):
    title: Title
    owner: Person | None = None
    due_on: dt.date | None = None
    done: StrictBool = False


class PostmortemPut(RequestModel):
    body: Annotated[str, StringConstraints(min_length=1, max_length=50_000, pattern=MULTILINE)] = (
        Field(description=f"The postmortem, in Markdown. {MULTILINE_NOTE}")
    )
    action_items: list[ActionItem] = Field(default_factory=list, max_length=100)
    publish: StrictBool = Field(
        default=False,
        description="Publish it: the incident moves to `postmortem` and the document is "
        "shown on the status page. Once published, every change is published.",
    )


class RollbackRequest(RequestModel):
    deployment_id: Id = Field(description="One of the incident's `recent_deployments`.")


class AffectedComponentOut(BaseModel):
    component_id: str
    name: str
    status: ComponentStatus = Field(description="The status the incident sets it to.")
    current_status: ComponentStatus = Field(
        description="What readers see now (the worst of every claim on it)."
    )


class TimelineEntry(BaseModel):
    id: str
    status: IncidentStatus
    severity: Severity | None = Field(description="Set when the entry changed the severity.")
    body: str
    visibility: Visibility
    created_by: str
    created_at: dt.datetime


class Postmortem(BaseModel):
    body: str
    action_items: list[ActionItem]
    published_at: dt.datetime | None


class IncidentLinks(BaseModel):
    self: str
    updates: str
    acknowledge: str
    resolve: str
    postmortem: str
    rollback: str


class IncidentOut(BaseModel):
    id: str
    title: str
    severity: Severity
    impact: Impact = Field(description="What the status page shows: P0 critical … P3 none.")
    status: IncidentStatus
    source: str = Field(description="`manual`, `alertmanager`, `deployment`, `backup`.")
    dedupe_key: str | None = Field(
        description="The alert group (or run) it belongs to while open; null once resolved."
    )
    commander: str | None
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    ack_due_at: dt.datetime | None = Field(description="Acknowledge by (the response time).")
    next_update_due_at: dt.datetime | None = Field(
        description="The next public update is due by; null once resolved."
    )
    resolve_target_at: dt.datetime | None
    identified_at: dt.datetime | None
    monitoring_at: dt.datetime | None
    resolved_at: dt.datetime | None
    components: list[AffectedComponentOut]
    postmortem: Postmortem | None
    links: IncidentLinks


class RecentDeploymentLinks(BaseModel):
    self: str
    rollback: str = Field(
        description="`POST` here with this `deployment_id` to roll it back "
        "(`POST /v1/incidents/{id}/rollback`)."
    )


class RecentDeployment(BaseModel):
    id: str
    kind: Literal["deployment", "rollback"]
    environment: str
    services: list[DeployedService]
    status: RunStatus
    requested_by: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    links: RecentDeploymentLinks


class IncidentDetail(IncidentOut):
    timeline: list[TimelineEntry] = Field(description="Oldest first.")
    recent_deployments: list[RecentDeployment] = Field(
        description="Deployments of its components' services in the lookback window before "
        "it opened (FORMULA_OPS_INCIDENTS__DEPLOYMENT_LOOKBACK_MINUTES), newest first."
    )


class IncidentList(BaseModel):
    items: list[IncidentOut]
    next_cursor: str | None
