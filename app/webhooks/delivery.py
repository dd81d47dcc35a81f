"""Making attempts and recording them: the work of one delivery job (a batch of leased
deliveries), and of the `test` request.

The database is the truth. A batch is the deliveries holding one lease token (set by the
dispatcher); the job sends them concurrently, then records every attempt and every
delivery's next state in one transaction, each update conditioned on the token still
being the job's (a lease that expired meanwhile was taken over: the attempt is still
logged, the newer holder decides the state).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.context import AppContext
from app.core.db import insert_rows, utcnow
from app.core.ids import new_id
from app.core.sealing import Unsealable
from app.core.settings import WebhookSettings
from app.outbox.models import OutboxEvent
from app.outbox.service import add_event
from app.webhooks import channels, payloads, signing
from app.webhooks import service as webhook_service
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.webhooks.sender import SENDER, AttemptResult

logger = logging.getLogger(__name__)

SYSTEM = Principal.system("system:webhooks", Role.OPERATOR)


@dataclass(frozen=True)
class Outcome:
    delivery: WebhookDelivery
    endpoint: WebhookEndpoint
    result: AttemptResult
    trigger: str


def next_delay(
    settings: WebhookSettings, index: int, retry_after: float | None, rng: random.Random
) -> float | None:
    """Seconds until the attempt after the one at ``index`` of the schedule, or None when
    the schedule is exhausted. ``Retry-After`` (429/503) may only lengthen the wait."""
    following = index + 1
    if following >= len(settings.retry_schedule_seconds):
        return None
    delay = settings.retry_schedule_seconds[following]
    delay *= 1 + rng.uniform(-settings.jitter, settings.jitter)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


_rng = random.Random()  # noqa: S311  (jitter, not a secret)


async def attempt(
    context: AppContext, endpoint: WebhookEndpoint, event: OutboxEvent
) -> AttemptResult:
    """One attempt of ``event`` to ``endpoint`` now: a webhook's signed POST (signed for
    this moment), or a channel's message through apprise (same timeout; the result has
    no status code, its error is scrubbed of the channel URL)."""
    now = utcnow()
    if endpoint.kind == "channel":
        try:
            url = webhook_service.channel_url(context, endpoint)
        except Unsealable as exc:
            return AttemptResult(started_at=now, duration_ms=0, error=f"channel unreadable: {exc}")
        return await channels.send(
            url,
            endpoint.templates or {},
            event,
            context.settings.webhooks,
            context.resources[SENDER].guard,
        )
    try:
        secrets = webhook_service.signing_secrets(context, endpoint, now)
        extra = webhook_service.custom_headers(context, endpoint)
    except Unsealable as exc:
        return AttemptResult(started_at=now, duration_ms=0, error=f"secret unreadable: {exc}")
    body = payloads.render(endpoint, event)
    headers = {**extra, **signing.headers(secrets, event.id, int(now.timestamp()), body)}
    return await context.resources[SENDER].post(endpoint.url or "", body, headers)


async def deliver_batch(context: AppContext, token: str) -> int:
    """Attempt every pending delivery leased under ``token``; returns how many."""
    async with context.sessionmaker() as session:
        rows = (
            await session.execute(
                select(WebhookDelivery, WebhookEndpoint, OutboxEvent)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
                .where(WebhookDelivery.lease_token == token, WebhookDelivery.status == "pending")
            )
        ).all()
    if not rows:
        return 0
    results = await asyncio.gather(*(attempt(context, ep, ev) for _, ep, ev in rows))
    outcomes = [
        Outcome(d, ep, r, "redelivery" if d.schedule_index == 0 and d.attempts else "scheduled")
        for (d, ep, _), r in zip(rows, results, strict=True)
    ]
    await record(context, token, outcomes)
    return len(outcomes)


def _attempt_row(outcome: Outcome) -> WebhookAttempt:
    result = outcome.result
    return WebhookAttempt(
        id=new_id(),
        delivery_id=outcome.delivery.id,
        number=outcome.delivery.attempts + 1,
        trigger=outcome.trigger,
        started_at=result.started_at,
        duration_ms=result.duration_ms,
        succeeded=result.succeeded,
        status_code=result.status_code,
        response_excerpt=result.response_excerpt,
        error=result.error,
    )


def _next_state(
    settings: WebhookSettings, outcome: Outcome, now: dt.datetime, *, retry: bool
) -> dict[str, object]:
    delivery, result = outcome.delivery, outcome.result
    state: dict[str, object] = {
        "b_id": delivery.id,
        "attempts": delivery.attempts + 1,
        "last_attempt_at": result.started_at,
        "last_status_code": result.status_code,
        "last_error": result.error,
        "lease_token": None,
        "lease_until": None,
        "schedule_index": delivery.schedule_index,
        "next_attempt_at": None,
        "delivered_at": delivery.delivered_at,
    }
    if result.succeeded:
        state |= {"status": "succeeded", "delivered_at": now}
        return state
    delay = (
        next_delay(settings, delivery.schedule_index, result.retry_after, _rng)
        if retry and not result.gone
        else None
    )
    if delay is None:
        state["status"] = "failed"
    else:
        state |= {
            "status": "pending",
            "schedule_index": delivery.schedule_index + 1,
            "next_attempt_at": now + dt.timedelta(seconds=delay),
        }
    return state


_DELIVERIES = WebhookDelivery.__table__
assert isinstance(_DELIVERIES, Table)
# Core, not ORM: one executemany conditioned on the lease token (ORM bulk updates match
# the primary key only).
_UPDATE = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("b_id"))
    .where(_DELIVERIES.c.lease_token == bindparam("b_token"))
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        schedule_index=bindparam("schedule_index"),
        next_attempt_at=bindparam("next_attempt_at"),
        lease_token=bindparam("lease_token"),
        lease_until=bindparam("lease_until"),
        last_attempt_at=bindparam("last_attempt_at"),
        last_status_code=bindparam("last_status_code"),
        last_error=bindparam("last_error"),
        delivered_at=bindparam("delivered_at"),
    )
)


async def record(
    context: AppContext, token: str, outcomes: Sequence[Outcome], *, retry: bool = True
) -> None:
    """Record attempts and next states in one transaction; update the endpoints' streaks
    and disable those that answered 410 or failed for too long."""
    settings = context.settings.webhooks
    now = utcnow()
    async with context.unit_of_work() as uow:
        session = uow.session
        await insert_rows(session, [_attempt_row(o) for o in outcomes])
        states = [
            {**_next_state(settings, o, now, retry=retry), "b_token": token} for o in outcomes
        ]
        connection = await session.connection()
        await connection.execute(_UPDATE, states)
        by_endpoint: dict[str, list[Outcome]] = {}
        for outcome in outcomes:
            by_endpoint.setdefault(outcome.endpoint.id, []).append(outcome)
        endpoints = (
            await session.scalars(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.id.in_(list(by_endpoint)))
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).all()
        for endpoint in endpoints:
            await _streak(session, settings, endpoint, by_endpoint[endpoint.id], now)


async def _streak(
    session: AsyncSession,
    settings: WebhookSettings,
    endpoint: WebhookEndpoint,
    outcomes: Sequence[Outcome],
    now: dt.datetime,
) -> None:
    if any(o.result.succeeded for o in outcomes):
        endpoint.last_success_at = now
        endpoint.failing_since = None
        return
    if endpoint.failing_since is None:
        endpoint.failing_since = min(o.result.started_at for o in outcomes)
    if not endpoint.enabled:
        return
    if any(o.result.gone for o in outcomes):
        await webhook_service.disable(
            session, SYSTEM, endpoint, "gone", "the endpoint answered 410 Gone"
        )
        logger.warning("webhook endpoint %s answered 410 Gone: disabled", endpoint.id)
    elif now - endpoint.failing_since >= dt.timedelta(seconds=settings.disable_after_seconds):
        await webhook_service.disable(
            session,
            SYSTEM,
            endpoint,
            "failing",
            f"no successful delivery since {endpoint.failing_since.isoformat()}",
        )
        logger.warning("webhook endpoint %s failing too long: disabled", endpoint.id)


async def send_test(
    context: AppContext, principal: Principal, endpoint_id: str
) -> tuple[WebhookDelivery, WebhookAttempt]:
    """A ``webhook.test`` event sent to one endpoint now, in this request: one attempt,
    recorded like any other (no retries)."""
    token = new_id()
    now = utcnow()
    async with context.unit_of_work() as uow:
        endpoint = await webhook_service.get(uow.session, endpoint_id)
        event = await add_event(
            uow.session,
            "webhook.test",
            {
                "endpoint_id": endpoint.id,
                "message": "A test event: this endpoint receives Formula Ops events.",
                "links": {"self": f"/v1/webhooks/{endpoint.id}"},
            },
        )
        # For this endpoint only: marked dispatched in its own transaction, so the
        # dispatcher never fans it out.
        event.dispatched_at = now
        await uow.session.execute(
            update(OutboxEvent).where(OutboxEvent.id == event.id).values(dispatched_at=now)
        )
        delivery = WebhookDelivery(
            id=new_id(),
            endpoint_id=endpoint.id,
            event_id=event.id,
            event_type=event.type,
            status="pending",
            attempts=0,
            schedule_index=0,
            next_attempt_at=None,
            lease_token=token,
            lease_until=now + dt.timedelta(seconds=context.settings.webhooks.lease_seconds),
            created_at=now,
        )
        uow.session.add(delivery)
        await uow.session.flush()
        await audit_service.record(
            uow.session,
            principal,
            action="webhook.test",
            resource_type="webhook",
            resource_id=endpoint.id,
            summary={"delivery_id": delivery.id},
        )
    result = await attempt(context, endpoint, event)
    outcome = Outcome(delivery, endpoint, result, "test")
    await record(context, token, [outcome], retry=False)
    async with context.sessionmaker() as session:
        delivery, _, attempts = await webhook_service.get_delivery(session, delivery.id)
    return delivery, attempts[-1]
