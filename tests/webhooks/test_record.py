"""Recording a batch: every attempt is logged, and a delivery's next state is written only
while the batch still holds its lease (PostgreSQL writes the batch as one statement of
arrays, SQLite one statement per delivery: both must say the same)."""

from __future__ import annotations

import datetime as dt

import httpx
from sqlalchemy import select, update

from app.core.context import AppContext
from app.core.db import utcnow
from app.core.ids import new_id
from app.outbox.models import OutboxEvent
from app.webhooks.delivery import Outcome, record
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.webhooks.sender import AttemptResult
from tests.factories import IssuedToken
from tests.webhooks.conftest import Receiver, create_webhook


async def leased(context: AppContext, endpoint_id: str, token: str, count: int) -> list[str]:
    now = utcnow()
    ids = [new_id() for _ in range(count)]
    async with context.unit_of_work() as uow:
        for delivery_id in ids:
            event_id = new_id()
            uow.session.add(
                OutboxEvent(
                    id=event_id, type="webhook.test", data={}, created_at=now, dispatched_at=now
                )
            )
            uow.session.add(
                WebhookDelivery(
                    id=delivery_id,
                    endpoint_id=endpoint_id,
                    event_id=event_id,
                    event_type="webhook.test",
                    status="pending",
                    attempts=0,
                    schedule_index=0,
                    next_attempt_at=now,
                    lease_token=token,
                    lease_until=now + dt.timedelta(seconds=60),
                    created_at=now,
                )
            )
    return ids


async def test_record_writes_each_state_and_skips_a_lease_taken_over(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    hook = await create_webhook(client, operator, url=receiver.url)
    token = new_id()
    ok, failed, taken = await leased(context, hook["id"], token, 3)
    async with context.unit_of_work() as uow:  # another holder leased this one meanwhile
        await uow.session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == taken).values(lease_token="other")
        )
    async with context.sessionmaker() as session:
        deliveries = {d.id: d for d in (await session.scalars(select(WebhookDelivery))).all()}
        endpoint = await session.get(WebhookEndpoint, hook["id"])
    assert endpoint is not None
    started = utcnow() - dt.timedelta(seconds=3)
    results = {
        ok: AttemptResult(started_at=started, duration_ms=5, status_code=204),
        failed: AttemptResult(
            started_at=started + dt.timedelta(seconds=1), duration_ms=7, error="cannot connect"
        ),
        taken: AttemptResult(started_at=started, duration_ms=5, status_code=200),
    }
    await record(
        context,
        token,
        [Outcome(deliveries[i], endpoint, results[i], "scheduled") for i in (ok, failed, taken)],
    )

    async with context.sessionmaker() as session:
        after = {d.id: d for d in (await session.scalars(select(WebhookDelivery))).all()}
        attempts = (await session.scalars(select(WebhookAttempt))).all()
    assert sorted(a.delivery_id for a in attempts) == sorted([ok, failed, taken])
    assert after[ok].status == "succeeded"
    assert after[ok].attempts == 1
    assert after[ok].last_status_code == 204
    assert after[ok].last_attempt_at == started
    assert after[ok].delivered_at is not None
    assert after[ok].lease_token is None
    assert after[failed].status == "pending"
    assert after[failed].attempts == 1
    assert after[failed].schedule_index == 1
    assert after[failed].last_error == "cannot connect"
    assert after[failed].last_status_code is None
    assert after[failed].next_attempt_at is not None
    assert after[failed].next_attempt_at > utcnow()
    assert after[failed].lease_token is None
    assert after[taken].status == "pending"  # the newer holder decides
    assert after[taken].attempts == 1  # its attempt is counted (and logged), nothing else
    assert after[taken].lease_token == "other"
