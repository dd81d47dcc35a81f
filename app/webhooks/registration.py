"""What the webhooks package contributes: its own event types."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES, EventType


class WebhookTestData(BaseModel):
    endpoint_id: str
    message: str
    links: dict[str, str]


class EndpointDisabledData(BaseModel):
    id: str = Field(description="The endpoint's id.")
    reason: str = Field(description="`gone` (it answered 410) or `failing` (too long).")
    detail: str
    failing_since: str | None
    links: dict[str, str]


def register(registry: Registry) -> None:
    events = registry[EVENT_TYPES]
    events.add(
        "webhook.test",
        EventType(
            "webhook.test",
            "Sent by `POST /v1/webhooks/{id}/test` to that endpoint only.",
            WebhookTestData,
        ),
    )
    events.add(
        "webhook_endpoint.disabled",
        EventType(
            "webhook_endpoint.disabled",
            "An endpoint was disabled: it answered 410 Gone, or failed without a success "
            "for too long (5 days by default).",
            EndpointDisabledData,
        ),
    )
