"""What the maintenances package contributes: its event types."""

from __future__ import annotations

from app.core.registry import Registry
from app.maintenances.events import EVENT_TYPES as MAINTENANCE_EVENTS
from app.outbox.catalog import EVENT_TYPES


def register(registry: Registry) -> None:
    events = registry[EVENT_TYPES]
    for event in MAINTENANCE_EVENTS:
        events.add(event.name, event)
