"""What the webhooks package contributes: its own event types."""

from __future__ import annotations

from pydantic import Field

from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES, EventData, EventLinks, EventType


class WebhookTestData(EventData):
    endpoint_id: str
    message: str
    links: EventLinks


class EndpointDisabledData(EventData):
    id: str = Field(description="The endpoint's id.")
    reason: str = Field(description="`gone` (it answered 410) or `failing` (too long).")
    detail: str
    failing_since: str | None
    links: EventLinks


def register(registry: Registry) -> None:
    events = registry[EVENT_TYPES]
    events.add(
        "webhook.test",
        EventType(
            "webhook.test",
            "Sent by `POST /v1/webhooks/{id}/test` to that endpoint only.",
            WebhookTestData,
            example={
                "endpoint_id": "01a23687-4bfe-732c-8fd1-7f136900038a",
                "message": "A test event: this endpoint receives Formula Ops events.",
                "links": {"self": "/v1/webhooks/01a23687-4bfe-732c-8fd1-7f136900038a"},
            },
        ),
    )
    events.add(
        "webhook_endpoint.disabled",
        EventType(
            "webhook_endpoint.disabled",
            "An endpoint was disabled: it answered 410 Gone, or failed without a success "
            "for too long (5 days by default).",
            EndpointDisabledData,
            example={
                "id": "01a23687-4bfe-732c-8fd1-7f136900038a",
                "reason": "gone",
                "detail": "the endpoint answered 410 Gone",
                "failing_since": "2026-01-01T11:59:58Z",
                "links": {"self": "/v1/webhooks/01a23687-4bfe-732c-8fd1-7f136900038a"},
            },
        ),
    )
