"""Tables: endpoints (where events go), deliveries (one event for one endpoint, the unit of
retry) and attempts (every HTTP request made, kept for the delivery log).

A delivery is not a run: it has its own small row, is picked by a conditional update with
a lease (so a job lost with Redis, or a worker killed mid-request, is attempted again
after the lease), and its attempts are recorded in batches.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoint"
    __table_args__ = (Index("ix_webhook_endpoint_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # webhook: an HTTP(S) URL that receives signed POSTs; channel: an apprise URL.
    kind: Mapped[str] = mapped_column(String(16), default="webhook")
    # The destination: a webhook's URL in clear, a channel's apprise URL sealed (it holds
    # the chat service's token or the mail password).
    url: Mapped[str | None] = mapped_column(Text)
    channel_sealed: Mapped[str | None] = mapped_column(Text)
    channel_service: Mapped[str | None] = mapped_column(String(32))
    templates: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str] = mapped_column(Text, default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    format: Mapped[str] = mapped_column(String(16), default="standard")
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(32))
    disabled_at: Mapped[dt.datetime | None]
    secret_sealed: Mapped[str] = mapped_column(Text)
    previous_secret_sealed: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[dt.datetime | None]
    # Custom headers sent with every attempt; sealed, since they may carry credentials.
    headers_sealed: Mapped[str | None] = mapped_column(Text)
    header_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    failing_since: Mapped[dt.datetime | None]
    last_success_at: Mapped[dt.datetime | None]
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)


class WebhookDelivery(Base):
    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_endpoint_id_created_at", "endpoint_id", "created_at", "id"),
        Index("ix_webhook_delivery_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_lease_token", "lease_token"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    # The outbox event: its id is the `webhook-id`, the same on every attempt.
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(100))
    # pending | succeeded | failed (every scheduled attempt failed) | cancelled
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    # Position in the retry schedule; a redelivery starts it again.
    schedule_index: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[dt.datetime | None]
    last_attempt_at: Mapped[dt.datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempt"
    __table_args__ = (Index("ix_webhook_attempt_delivery_id_number", "delivery_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_delivery.id", ondelete="CASCADE"))
    number: Mapped[int]
    # scheduled | redelivery | test
    trigger: Mapped[str] = mapped_column(String(16), default="scheduled")
    started_at: Mapped[dt.datetime]
    duration_ms: Mapped[int]
    succeeded: Mapped[bool]
    status_code: Mapped[int | None]
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
