"""What the schedules package contributes: its event types."""

from __future__ import annotations

from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES
from app.schedules.events import EVENT_TYPES as SCHEDULE_EVENTS


def register(registry: Registry) -> None:
    events = registry[EVENT_TYPES]
    for event in SCHEDULE_EVENTS:
        events.add(event.name, event)
