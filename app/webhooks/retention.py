"""How long the delivery log and delivered events are kept
(``FORMULA_OPS_WEBHOOKS__RETENTION_DAYS``, 30 by default): a daily job deletes finished
deliveries (with their attempts) older than that, and dispatched outbox events of that
age that no delivery still refers to. Pending deliveries and their events are kept
whatever their age."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, exists, select

from app.core.context import AppContext
from app.core.db import utcnow
from app.outbox.models import OutboxEvent
from app.webhooks.models import WebhookAttempt, WebhookDelivery

FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Purged:
    deliveries: int
    events: int


async def purge(context: AppContext, *, now: dt.datetime | None = None) -> Purged:
    cutoff = (now or utcnow()) - dt.timedelta(days=context.settings.webhooks.retention_days)
    old = select(WebhookDelivery.id).where(
        WebhookDelivery.status.in_(FINISHED), WebhookDelivery.created_at < cutoff
    )
    async with context.unit_of_work() as uow:
        session = uow.session
        await session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(old)))
        deliveries = await session.execute(
            delete(WebhookDelivery).where(WebhookDelivery.id.in_(old))
        )
        events = await session.execute(
            delete(OutboxEvent).where(
                OutboxEvent.dispatched_at.is_not(None),
                OutboxEvent.created_at < cutoff,
                ~exists().where(WebhookDelivery.event_id == OutboxEvent.id),
            )
        )
    return Purged(
        deliveries=deliveries.rowcount or 0,  # type: ignore[attr-defined]
        events=events.rowcount or 0,  # type: ignore[attr-defined]
    )
