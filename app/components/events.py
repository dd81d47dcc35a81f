"""The event the components domain emits: ``component.status_changed``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from app.components.vocabulary import ComponentStatus
from app.core.paths import V1
from app.outbox.catalog import EventData, EventLinks, EventType

COMPONENT_STATUS_CHANGED = "component.status_changed"


class ComponentStatusChanged(EventData):
    """``component.status_changed``: a component's status changed (not its name or
    group)."""

    component_id: str
    name: str
    group: str | None = Field(description="The component's group; null when ungrouped.")
    showcase: bool = Field(
        description="Whether the component is shown on the public status page; the "
        "`statuspage` webhook format leaves out the changes of one that is not."
    )
    old_status: ComponentStatus
    new_status: ComponentStatus
    changed_at: dt.datetime = Field(description="When the status changed (UTC).")
    component_created_at: dt.datetime = Field(description="When the component was created.")
    links: EventLinks


EXAMPLE: dict[str, Any] = {
    "component_id": "cmp_api",
    "name": "API",
    "group": "Backend",
    "showcase": True,
    "old_status": "operational",
    "new_status": "partial_outage",
    "changed_at": "2026-01-01T12:00:00Z",
    "component_created_at": "2025-06-01T08:00:00Z",
    "links": {"self": f"{V1}/components/cmp_api"},
}

STATUS_CHANGED = EventType(
    COMPONENT_STATUS_CHANGED,
    "A component's status changed.",
    ComponentStatusChanged,
    EXAMPLE,
)
EVENT_TYPES: tuple[EventType, ...] = (STATUS_CHANGED,)
