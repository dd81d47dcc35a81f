"""What the components package contributes: ``component.status_changed``."""

from __future__ import annotations

from app.components.events import EVENT_TYPES as COMPONENT_EVENTS
from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES


def register(registry: Registry) -> None:
    for event in COMPONENT_EVENTS:
        registry[EVENT_TYPES].add(event.name, event)
