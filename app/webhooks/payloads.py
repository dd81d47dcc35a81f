"""What an endpoint receives for an event: the body bytes (signed as they are sent).

``standard``: ``{"type", "timestamp", "data"}``, the event as the outbox holds it.
"""

from __future__ import annotations

import json
from typing import Any

from app.outbox.models import OutboxEvent
from app.webhooks.models import WebhookEndpoint


def event_body(event: OutboxEvent) -> dict[str, Any]:
    return {
        "type": event.type,
        "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": event.data,
    }


def wants(endpoint: WebhookEndpoint, event_type: str) -> bool:
    """Whether ``endpoint`` receives events of ``event_type`` in its format (a format may
    carry only some families)."""
    return True


def render(endpoint: WebhookEndpoint, event: OutboxEvent) -> bytes:
    return json.dumps(event_body(event), separators=(",", ":"), default=str).encode()
