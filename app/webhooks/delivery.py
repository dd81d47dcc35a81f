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
import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Row, Table, bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.context import AppContext
from app.core.db import Base, utcnow
from app.core.ids import new_id
from app.core.redaction import MIN_KNOWN_SECRET, REDACTED
from app.core.sealing import Unsealable
from app.core.settings import WebhookSettings
from app.core.tasks import run_to_end
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
    """One attempt, whatever happens: an unexpected error becomes the attempt's error
    (logged), so one delivery can never keep its batch from being recorded."""
    started = utcnow()
    try:
        return await _attempt(context, endpoint, event)
    except Exception as exc:
        logger.exception("webhook attempt to endpoint %s failed unexpectedly", endpoint.id)
        return AttemptResult(
            started_at=started, duration_ms=0, error=f"internal error ({type(exc).__name__})"
        )


def _without(values: list[str], text: str | None) -> str | None:
    """``text`` with each of ``values`` (custom header values, 6+ characters) redacted: a
    receiver that echoes our request must not show them in the delivery log."""
    if text is None:
        return None
    for value in values:
        text = text.replace(value, REDACTED)
    return text


async def _attempt(
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
    result = await context.resources[SENDER].post(endpoint.url or "", body, headers)
    hidden = sorted((v for v in extra.values() if len(v) >= MIN_KNOWN_SECRET), key=len)[::-1]
    if hidden:
        result = dataclasses.replace(
            result,
            response_excerpt=_without(hidden, result.response_excerpt),
            error=_without(hidden, result.error),
        )
    return result


async def deliver_batch(context: AppContext, token: str) -> int:
    """Attempt every pending delivery leased under ``token``; returns how many."""
    statement = (
        select(WebhookDelivery, WebhookEndpoint, OutboxEvent)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.lease_token == token, WebhookDelivery.status == "pending")
    )
    if context.engine.dialect.name == "postgresql":
        # One statement needs no transaction: no BEGIN and ROLLBACK round trips.
        async with context.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            async with AsyncSession(bind=connection, expire_on_commit=False) as session:
                rows = (await session.execute(statement)).all()
    else:
        async with context.sessionmaker() as session:
            rows = (await session.execute(statement)).all()
    if not rows:
        return 0
    # Once the requests go out, the job makes them and records them even if it is
    # cancelled meanwhile, once or again and again (a worker stopping cancels its running
    # jobs): else every receiver would get them again after the lease, missing from the
    # attempt log. A stop waits at most the request timeout and one transaction.
    return await run_to_end(_send_and_record(context, token, rows))


async def _send_and_record(
    context: AppContext,
    token: str,
    rows: Sequence[Row[WebhookDelivery, WebhookEndpoint, OutboxEvent]],
) -> int:
    results = await asyncio.gather(*(attempt(context, ep, ev) for _, ep, ev in rows))
    outcomes = [
        Outcome(d, ep, r, "redelivery" if d.schedule_index == 0 and d.attempts else "scheduled")
        for (d, ep, _), r in zip(rows, results, strict=True)
    ]
    await record(context, token, outcomes)
    return len(outcomes)


def _attempt_values(outcome: Outcome, number: int) -> dict[str, object]:
    """The attempt's row, for a Core INSERT (no ORM object per attempt)."""
    result = outcome.result
    return {
        "id": new_id(),
        "delivery_id": outcome.delivery.id,
        "number": number,
        "trigger": outcome.trigger,
        "started_at": result.started_at,
        "duration_ms": result.duration_ms,
        "succeeded": result.succeeded,
        "status_code": result.status_code,
        "response_excerpt": result.response_excerpt,
        "error": result.error,
    }


def _next_state(
    settings: WebhookSettings, outcome: Outcome, number: int, now: dt.datetime, *, retry: bool
) -> dict[str, object]:
    delivery, result = outcome.delivery, outcome.result
    state: dict[str, object] = {
        "b_id": delivery.id,
        "attempts": number,
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


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_DELIVERIES = _table(WebhookDelivery)
_ATTEMPTS = _table(WebhookAttempt)
_ENDPOINTS = _table(WebhookEndpoint)
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


# PostgreSQL: the whole batch in one statement, its rows as arrays (one round trip, where
# an executemany sends one UPDATE per delivery); same condition on the lease token.
_UPDATE_ARRAYS = text(
    """
    UPDATE webhook_delivery AS d SET
        status = v.status, attempts = v.attempts, schedule_index = v.schedule_index,
        next_attempt_at = v.next_attempt_at, lease_token = v.lease_token,
        lease_until = v.lease_until, last_attempt_at = v.last_attempt_at,
        last_status_code = v.last_status_code, last_error = v.last_error,
        delivered_at = v.delivered_at
    FROM unnest(
        CAST(:b_id AS varchar[]), CAST(:status AS varchar[]), CAST(:attempts AS integer[]),
        CAST(:schedule_index AS integer[]), CAST(:next_attempt_at AS timestamptz[]),
        CAST(:lease_token AS varchar[]), CAST(:lease_until AS timestamptz[]),
        CAST(:last_attempt_at AS timestamptz[]), CAST(:last_status_code AS integer[]),
        CAST(:last_error AS text[]), CAST(:delivered_at AS timestamptz[])
    ) AS v(id, status, attempts, schedule_index, next_attempt_at, lease_token, lease_until,
           last_attempt_at, last_status_code, last_error, delivered_at)
    WHERE d.id = v.id AND d.lease_token = :b_token
    """
)


async def _update_deliveries(
    connection: AsyncConnection, token: str, states: Sequence[dict[str, object]]
) -> None:
    if connection.dialect.name != "postgresql":  # SQLite: many statements, no round trips
        await connection.execute(_UPDATE, [{**state, "b_token": token} for state in states])
        return
    arrays: dict[str, object] = {key: [state[key] for state in states] for key in states[0]}
    await connection.execute(_UPDATE_ARRAYS, {**arrays, "b_token": token})


_COUNT = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("b_id"))
    .values(attempts=bindparam("attempts"))
)


async def record(
    context: AppContext,
    token: str,
    outcomes: Sequence[Outcome],
    *,
    retry: bool = True,
    streak: bool = True,
) -> None:
    """Record attempts and next states in one transaction; update the endpoints' streaks
    and disable those that answered 410 or failed for too long.

    The deliveries are locked (after their endpoints) and their attempts counted from the
    rows as they are now, not as the job read them: a job whose lease expired during its
    requests (a receiver slower than the lease, a paused worker) records after the new
    holder may have, and its attempts are logged with the next numbers, without touching
    the state the new holder owns."""
    if not outcomes:
        return
    for outcome in outcomes:
        context.metrics.observe_webhook_attempt(
            outcome.result.succeeded, outcome.trigger, outcome.result.duration_ms
        )
    settings = context.settings.webhooks
    now = utcnow()
    async with context.unit_of_work() as uow:
        session = uow.session
        connection = await session.connection()
        # The endpoints first, in id order: disabling one cancels its pending deliveries,
        # which a concurrent batch of the same endpoint may be updating; taking the
        # endpoint's lock before any delivery row keeps two batches from deadlocking.
        # FOR NO KEY UPDATE (key_share): it leaves the key-share locks alone that the
        # dispatcher's inserts of new deliveries take on their endpoints (foreign key),
        # else a fan-out and a record deadlock on two endpoints.
        await connection.execute(
            select(_ENDPOINTS.c.id)
            .where(_ENDPOINTS.c.id.in_(sorted({o.endpoint.id for o in outcomes})))
            .order_by(_ENDPOINTS.c.id)
            .with_for_update(key_share=True)
        )
        current = {
            row.id: (row.attempts, row.lease_token)
            for row in await connection.execute(
                select(_DELIVERIES.c.id, _DELIVERIES.c.attempts, _DELIVERIES.c.lease_token)
                .where(_DELIVERIES.c.id.in_([o.delivery.id for o in outcomes]))
                .order_by(_DELIVERIES.c.id)  # one lock order for every job
                .with_for_update(key_share=True)
            )
        }
        # a delivery deleted meanwhile (its endpoint was) has nothing left to record
        outcomes = [o for o in outcomes if o.delivery.id in current]
        if not outcomes:
            return
        numbers = {o.delivery.id: current[o.delivery.id][0] + 1 for o in outcomes}
        await connection.execute(
            insert(_ATTEMPTS), [_attempt_values(o, numbers[o.delivery.id]) for o in outcomes]
        )
        held = [o for o in outcomes if current[o.delivery.id][1] == token]
        taken = [o for o in outcomes if current[o.delivery.id][1] != token]
        if held:
            states = [
                _next_state(settings, o, numbers[o.delivery.id], now, retry=retry) for o in held
            ]
            await _update_deliveries(connection, token, states)
        if taken:
            await connection.execute(
                _COUNT,
                [{"b_id": o.delivery.id, "attempts": numbers[o.delivery.id]} for o in taken],
            )
        if not streak:  # a test probes: the endpoint's streak and state stay as they were
            return
        by_endpoint: dict[str, list[Outcome]] = {}
        for outcome in outcomes:
            by_endpoint.setdefault(outcome.endpoint.id, []).append(outcome)
        # An endpoint with a success in the batch: one UPDATE, nothing to decide. The others
        # are read (locked above), since their streak may disable them.
        answered = sorted(
            endpoint_id
            for endpoint_id, found in by_endpoint.items()
            if any(o.result.succeeded for o in found)
        )
        if answered:
            await connection.execute(
                update(_ENDPOINTS)
                .where(_ENDPOINTS.c.id.in_(answered))
                .values(last_success_at=now, failing_since=None)
            )
        failing = sorted(set(by_endpoint) - set(answered))
        if not failing:
            return
        endpoints = (
            await session.scalars(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.id.in_(failing))
                .order_by(WebhookEndpoint.id)
                .with_for_update(key_share=True)
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
    await record(context, token, [outcome], retry=False, streak=False)
    async with context.sessionmaker() as session:
        delivery, _, attempts = await webhook_service.get_delivery(session, delivery.id)
    return delivery, attempts[-1]
