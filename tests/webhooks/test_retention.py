"""The daily purge keeps pending deliveries and what they need, deletes the old rest."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from app.core.context import AppContext
from app.core.db import insert_rows, utcnow
from app.core.ids import new_id
from app.outbox.models import OutboxEvent
from app.webhooks import retention
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


async def test_old_finished_history_goes_pending_stays(context: AppContext) -> None:
    now = utcnow()
    old = now - dt.timedelta(days=31)
    recent = now - dt.timedelta(days=29)
    endpoint = WebhookEndpoint(
        id=new_id(),
        url="http://127.0.0.1:9/",
        secret_sealed="x",
        created_by="tests",
        event_types=["*"],
        templates={},
        header_names=[],
    )
    events = {
        name: OutboxEvent(
            id=new_id(), type="webhook.test", data={}, created_at=when, dispatched_at=when
        )
        for name, when in (
            ("old_done", old),
            ("old_pending", old),
            ("recent", recent),
            ("old_alone", old),
        )
    }
    deliveries = [
        WebhookDelivery(
            id=new_id(),
            endpoint_id=endpoint.id,
            event_id=events[name].id,
            event_type="webhook.test",
            status=status,
            created_at=when,
        )
        for name, status, when in (
            ("old_done", "succeeded", old),
            ("old_pending", "pending", old),
            ("recent", "failed", recent),
        )
    ]
    attempt = WebhookAttempt(
        id=new_id(),
        delivery_id=deliveries[0].id,
        number=1,
        started_at=old,
        duration_ms=1,
        succeeded=True,
    )
    async with context.unit_of_work() as uow:
        uow.session.add(endpoint)
        await uow.session.flush()
        await insert_rows(uow.session, list(events.values()))
        await insert_rows(uow.session, deliveries)
        await insert_rows(uow.session, [attempt])
    purged = await retention.purge(context)
    assert (purged.deliveries, purged.events) == (1, 2)
    async with context.sessionmaker() as session:
        kept_events = set((await session.scalars(select(OutboxEvent.id))).all())
        kept = set((await session.scalars(select(WebhookDelivery.status))).all())
        attempts = await session.scalar(select(func.count()).select_from(WebhookAttempt))
    assert kept_events == {events["old_pending"].id, events["recent"].id}
    assert kept == {"pending", "failed"}
    assert attempts == 0
