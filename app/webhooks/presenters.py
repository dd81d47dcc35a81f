"""Rows → response bodies. A webhook's URL goes out through the one redaction rule (a
secret in its query is not shown); a channel's URL only in its masked form (the sealed
URL is never opened here); secrets and custom header values never go out."""

from __future__ import annotations

from app.core.paths import V1
from app.core.redaction import redact_text
from app.outbox.models import OutboxEvent
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.webhooks.payloads import body as event_body_for
from app.webhooks.schemas import (
    AttemptOut,
    DeliveryDetail,
    DeliveryOut,
    SecretRotation,
    WebhookOut,
)


def webhook_location(endpoint_id: str) -> str:
    return f"{V1}/webhooks/{endpoint_id}"


def delivery_location(delivery_id: str) -> str:
    return f"{V1}/webhook-deliveries/{delivery_id}"


def webhook_out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        kind=endpoint.kind,
        url=redact_text(endpoint.url or ""),
        channel_service=endpoint.channel_service if endpoint.kind == "channel" else None,
        templates=endpoint.templates or {},
        description=endpoint.description,
        event_types=endpoint.event_types,
        format=endpoint.format,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        disabled_at=endpoint.disabled_at,
        header_names=endpoint.header_names,
        rotation=SecretRotation(previous_secret_expires_at=endpoint.previous_secret_expires_at),
        failing_since=endpoint.failing_since,
        last_success_at=endpoint.last_success_at,
        created_by=endpoint.created_by,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
        links={
            "self": webhook_location(endpoint.id),
            "deliveries": f"{webhook_location(endpoint.id)}/deliveries",
        },
    )


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        webhook_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_attempt_at=delivery.last_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
        links={
            "self": delivery_location(delivery.id),
            "endpoint": webhook_location(delivery.endpoint_id),
            "redeliver": f"{delivery_location(delivery.id)}/redeliver",
        },
    )


def attempt_out(attempt: WebhookAttempt) -> AttemptOut:
    return AttemptOut(
        number=attempt.number,
        trigger=attempt.trigger,
        started_at=attempt.started_at,
        duration_ms=attempt.duration_ms,
        succeeded=attempt.succeeded,
        status_code=attempt.status_code,
        response_excerpt=attempt.response_excerpt,
        error=attempt.error,
    )


def delivery_detail(
    delivery: WebhookDelivery,
    endpoint: WebhookEndpoint,
    event: OutboxEvent | None,
    attempts: list[WebhookAttempt],
) -> DeliveryDetail:
    """With the body as this endpoint receives it (its format)."""
    return DeliveryDetail(
        **delivery_out(delivery).model_dump(),
        event=event_body_for(endpoint, event) if event is not None else {},
        attempt_log=[attempt_out(a) for a in attempts],
    )
