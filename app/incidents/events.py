"""The events of an incident's life: ``incident.created`` / ``incident.updated`` /
``incident.resolved`` carry the incident as it is after the change (the status page's
contract, rendered in Statuspage's shape by the webhooks' ``statuspage`` format)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.components.vocabulary import ComponentStatus, Impact, IncidentStatus, Severity
from app.core.paths import V1
from app.outbox.catalog import EventData, EventLinks, EventType

INCIDENT_CREATED = "incident.created"
INCIDENT_UPDATED = "incident.updated"
INCIDENT_RESOLVED = "incident.resolved"
INCIDENT_EVENTS = (INCIDENT_CREATED, INCIDENT_UPDATED, INCIDENT_RESOLVED)


class AffectedComponent(BaseModel):
    """A component an incident affects, with its status at the time of the event."""

    model_config = ConfigDict(extra="forbid")

    component_id: str
    name: str
    status: ComponentStatus
    showcase: bool = Field(
        description="Whether the component is shown on the public status page; the "
        "`statuspage` webhook format leaves out one that is not."
    )


class IncidentUpdate(BaseModel):
    """The update (the message to readers) the event announces."""

    model_config = ConfigDict(extra="forbid")

    id: str
    body: str
    created_at: dt.datetime


class IncidentChanged(EventData):
    """``incident.created`` / ``incident.updated`` / ``incident.resolved``: the incident
    as it is after the change, with its latest public update."""

    incident_id: str
    name: str = Field(description="The incident's title.")
    status: IncidentStatus
    severity: Severity = Field(description="Internal priority, P0 (highest) to P3.")
    impact: Impact = Field(description="The impact shown to readers of the status page.")
    components: list[AffectedComponent] = Field(description="The components it affects.")
    latest_update: IncidentUpdate
    created_at: dt.datetime
    updated_at: dt.datetime
    monitoring_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    links: EventLinks


EXAMPLE: dict[str, Any] = {
    "incident_id": "inc_1",
    "name": "Elevated API errors",
    "status": "identified",
    "severity": "P1",
    "impact": "major",
    "components": [
        {"component_id": "cmp_api", "name": "API", "status": "partial_outage", "showcase": True}
    ],
    "latest_update": {
        "id": "upd_2",
        "body": "A bad deployment; rolling back.",
        "created_at": "2026-01-01T12:10:00Z",
    },
    "created_at": "2026-01-01T12:00:00Z",
    "updated_at": "2026-01-01T12:10:00Z",
    "monitoring_at": None,
    "resolved_at": None,
    "links": {"self": f"{V1}/incidents/inc_1"},
}

CHANGE_TYPES: tuple[EventType, ...] = (
    EventType(INCIDENT_CREATED, "An incident was declared.", IncidentChanged, EXAMPLE),
    EventType(
        INCIDENT_UPDATED,
        "An incident changed status, impact or components, or got an update.",
        IncidentChanged,
        EXAMPLE,
    ),
    EventType(
        INCIDENT_RESOLVED,
        "An incident was resolved.",
        IncidentChanged,
        {
            **EXAMPLE,
            "status": "resolved",
            "resolved_at": "2026-01-01T12:40:00Z",
            "updated_at": "2026-01-01T12:40:00Z",
        },
    ),
)
