"""The events of a maintenance window's life: ``maintenance.scheduled`` (created),
``maintenance.started`` and ``maintenance.completed``, each with the window as it is
after the change."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.components.vocabulary import ComponentStatus
from app.core.paths import V1
from app.outbox.catalog import EventData, EventLinks, EventType

MAINTENANCE_SCHEDULED = "maintenance.scheduled"
MAINTENANCE_STARTED = "maintenance.started"
MAINTENANCE_COMPLETED = "maintenance.completed"


class WindowComponent(BaseModel):
    """A component of the window, with its status at the time of the event."""

    model_config = ConfigDict(extra="forbid")

    component_id: str
    name: str
    status: ComponentStatus


class MaintenanceChanged(EventData):
    """The window as it is after the change."""

    maintenance_id: str
    title: str
    status: str = Field(description="`scheduled`, `in_progress` or `completed`.")
    scheduled_for: dt.datetime
    scheduled_until: dt.datetime
    deploy_window: bool = Field(description="Its environments stay open for deployments.")
    components: list[WindowComponent]
    environments: list[str] = Field(description="The environments it concerns.")
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    links: EventLinks


_ID = "0193f0c2-5a4e-7d1c-9b2a-3c4d5e6f7a8b"
EXAMPLE: dict[str, Any] = {
    "maintenance_id": _ID,
    "title": "Database upgrade",
    "status": "in_progress",
    "scheduled_for": "2026-01-01T22:00:00Z",
    "scheduled_until": "2026-01-01T23:00:00Z",
    "deploy_window": False,
    "components": [{"component_id": "cmp_db", "name": "Database", "status": "under_maintenance"}],
    "environments": ["production"],
    "started_at": "2026-01-01T22:00:01Z",
    "completed_at": None,
    "links": {"self": f"{V1}/maintenances/{_ID}"},
}

EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        MAINTENANCE_SCHEDULED,
        "A maintenance window was scheduled.",
        MaintenanceChanged,
        {
            **EXAMPLE,
            "status": "scheduled",
            "started_at": None,
            "components": [{"component_id": "cmp_db", "name": "Database", "status": "operational"}],
        },
    ),
    EventType(
        MAINTENANCE_STARTED,
        "A maintenance window started: its components are under maintenance, its "
        "environments frozen for deployments (unless it is a deploy window).",
        MaintenanceChanged,
        EXAMPLE,
    ),
    EventType(
        MAINTENANCE_COMPLETED,
        "A maintenance window completed: its components are restored, its environments open again.",
        MaintenanceChanged,
        {
            **EXAMPLE,
            "status": "completed",
            "completed_at": "2026-01-01T23:00:05Z",
            "components": [{"component_id": "cmp_db", "name": "Database", "status": "operational"}],
        },
    ),
)
