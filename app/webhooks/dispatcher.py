"""The dispatcher: turns outbox events into deliveries and hands due deliveries to the
delivery job, in batches. It runs as a loop in every worker process (every
``FORMULA_OPS_WEBHOOKS__DISPATCH_INTERVAL_SECONDS``); on PostgreSQL several workers share
the work through ``FOR UPDATE SKIP LOCKED``.

It is also the reconciler of deliveries: a batch whose job was lost (Redis flushed or
restarted, worker killed) keeps its rows ``pending`` with a lease; when the lease expires
the rows are due again and leased anew under a new token. So a delivery is attempted
until it is recorded, whatever happens to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import Table, func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.core.context import AppContext
from app.core.db import Base, utcnow
from app.core.ids import new_id
from app.core.queue import REDIS_DOWN, JobName
from app.outbox.catalog import matches
from app.outbox.models import OutboxEvent
from app.webhooks import payloads
from app.webhooks.models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

FAN_OUT_BATCH = 500
# Batches leased ahead of the workers: enough to keep them busy, few enough that a
# backlog does not outlive its leases.
BATCHES_AHEAD = 16


@dataclass(frozen=True)
class Dispatched:
    events: int
    deliveries: int
    batches: int


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_DELIVERIES = _table(WebhookDelivery)
_OUTBOX = _table(OutboxEvent)


def _job_id(token: str) -> str:
    return f"webhooks:{token}"


async def fan_out(context: AppContext, *, limit: int = FAN_OUT_BATCH) -> tuple[int, int]:
    """One delivery per new event and matching enabled endpoint, and the events marked
    dispatched, in one transaction; returns (events, deliveries)."""
    now = utcnow()
    schedule = context.settings.webhooks.retry_schedule_seconds
    async with context.unit_of_work() as uow:
        session = uow.session
        # Core rows, not ORM objects: only ids and types are needed here, and an ORM
        # object per event and per delivery cost more than the statements.
        events = (
            await session.execute(
                select(OutboxEvent.id, OutboxEvent.type, OutboxEvent.data)
                .where(OutboxEvent.dispatched_at.is_(None))
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not events:
            return 0, 0
        endpoints = (
            await session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.enabled))
        ).all()
        by_id = {endpoint.id: endpoint for endpoint in endpoints}
        first = now + dt.timedelta(seconds=schedule[0])
        wanted: dict[str, list[str]] = {}  # event type -> endpoint ids
        for event_type in {event.type for event in events}:
            wanted[event_type] = [
                endpoint.id
                for endpoint in endpoints
                if any(matches(p, event_type) for p in endpoint.event_types)
                and payloads.wants(endpoint, event_type)
            ]
        deliveries = [
            {
                "id": new_id(),
                "endpoint_id": endpoint_id,
                "event_id": event.id,
                "event_type": event.type,
                "status": "pending",
                "attempts": 0,
                "schedule_index": 0,
                "next_attempt_at": first,
                "created_at": now,
            }
            for event in events
            for endpoint_id in wanted[event.type]
            # A format may leave out some events of a type (statuspage: hidden components).
            if payloads.wants(by_id[endpoint_id], event.type, event.data)
        ]
        connection = await session.connection()
        if deliveries:
            await connection.execute(insert(_DELIVERIES), deliveries)
        await connection.execute(
            update(_OUTBOX)
            .where(_OUTBOX.c.id.in_([event.id for event in events]))
            .values(dispatched_at=now)
        )
    return len(events), len(deliveries)


async def lease_due(context: AppContext) -> list[str]:
    """Lease due deliveries in batches; returns one token per batch (the job's argument)."""
    settings = context.settings.webhooks
    now = utcnow()
    async with context.unit_of_work() as uow:
        session = uow.session
        in_flight = await session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.lease_until > now)
        )
        room = settings.batch_size * BATCHES_AHEAD - int(in_flight or 0)
        if room <= 0:
            return []
        due = (
            await session.scalars(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at <= now,
                    or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until <= now),
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(room)
                .with_for_update(skip_locked=True)
            )
        ).all()
        tokens: list[str] = []
        lease_until = now + dt.timedelta(seconds=settings.lease_seconds)
        for start in range(0, len(due), settings.batch_size):
            token = new_id()
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(due[start : start + settings.batch_size]))
                .values(lease_token=token, lease_until=lease_until)
            )
            tokens.append(token)
    return tokens


async def work_waiting(context: AppContext) -> bool:
    """Whether an event waits for fan-out or a delivery is due: two indexed reads, so an
    idle dispatcher takes no write transaction (on SQLite, no write lock) per tick."""
    now = utcnow()
    async with context.sessionmaker() as session:
        event = await session.scalar(
            select(OutboxEvent.id).where(OutboxEvent.dispatched_at.is_(None)).limit(1)
        )
        if event is not None:
            return True
        due = await session.scalar(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until <= now),
            )
            .limit(1)
        )
    return due is not None


async def dispatch_once(context: AppContext) -> Dispatched:
    """Fan out new events, lease due deliveries, enqueue their jobs. A job that cannot be
    enqueued (Redis down) is found again when its lease expires."""
    events = deliveries = batches = 0
    if not await work_waiting(context):
        return Dispatched(events=0, deliveries=0, batches=0)
    while True:  # a backlog of events: its first deliveries leave before the rest fan out
        found, made = await fan_out(context)
        events, deliveries = events + found, deliveries + made
        tokens = await lease_due(context)
        for token in tokens:
            await context.queue.enqueue(JobName.DELIVER_WEBHOOKS, token, job_id=_job_id(token))
        batches += len(tokens)
        if found < FAN_OUT_BATCH:
            break
    return Dispatched(events=events, deliveries=deliveries, batches=batches)


async def run_dispatcher(
    context: AppContext, interval: float, stop: asyncio.Event | None = None
) -> None:
    """The loop, until ``stop`` is set (between ticks, never inside a transaction).

    A database or Redis outage is logged once and waited out, never fatal. Any other
    error (a defect, a row it cannot read) is logged once with its traceback and retried
    the same way: the task must not end, or this process would silently stop dispatching
    while it goes on running jobs."""
    stop = stop or asyncio.Event()
    down = False
    while not stop.is_set():
        pause = interval
        try:
            await dispatch_once(context)
        except (SQLAlchemyError, *REDIS_DOWN) as exc:  # type: ignore[misc]
            if not down:
                logger.warning(
                    "webhook dispatcher: %s; events wait in the outbox until it recovers",
                    type(exc).__name__,
                )
                down = True
            pause = min(interval * 8, 2.0)
        except Exception:
            if not down:
                logger.exception("webhook dispatcher failed; events wait in the outbox")
                down = True
            pause = min(interval * 8, 2.0)
        else:
            if down:
                logger.info("webhook dispatcher: running again")
                down = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)


@dataclass
class Running:
    task: asyncio.Task[None]
    stop: asyncio.Event


def start_dispatcher(context: AppContext) -> Running:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_dispatcher(context, context.settings.webhooks.dispatch_interval_seconds, stop),
        name="webhook-dispatcher",
    )
    return Running(task, stop)


async def stop_dispatcher(running: Running | None, *, grace: float = 10.0) -> None:
    """Stop after the current tick (a tick cancelled inside its transaction would leave
    it to the garbage collector); cancel only a tick stuck beyond ``grace``."""
    if running is None:
        return
    running.stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(running.task), grace)
    except TimeoutError:
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task
