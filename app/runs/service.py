"""Run rules: create (rows + event + enqueue after commit), read, wait, cancel, reconcile.

A run's plan is data: ordered step rows, each a typed action with validated parameters,
written with the run. Workers execute rows (:mod:`app.runs.engine`); the kind of a run
only decides its plan and how its outcome is summarised (:mod:`app.runs.kinds`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.auth.scope import readable
from app.core.context import AppContext
from app.core.db import UnitOfWork, insert_rows, utcnow
from app.core.errors import AppError, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.notify import wait_for
from app.core.pagination import CursorParams, paginate
from app.core.queue import JobName, Queue
from app.core.redaction import redact_value
from app.core.registry import NotRegistered, Registry
from app.outbox.service import add_event
from app.runs import kinds
from app.runs.actions import ACTIONS
from app.runs.events import run_links
from app.runs.models import (
    TERMINAL_STATUSES,
    Phase,
    Run,
    RunEvent,
    RunKind,
    RunStatus,
    Step,
    StepStatus,
)

logger = logging.getLogger(__name__)


class RunNotFound(NotFound):
    type = "/problems/run-not-found"
    title = "Run not found"


class RunAlreadyFinished(AppError):
    type = "/problems/run-finished"
    title = "Run already finished"
    status = 409


@dataclass(frozen=True)
class StepSpec:
    """One planned step: an action, its parameters, and how to treat it."""

    name: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    idempotent: bool | None = None  # default: what the action declares
    timeout_seconds: float = 300.0
    stop_on_failure: bool = True
    phase: Phase = Phase.MAIN


def invalid_params(exc: Exception) -> str:
    """What is wrong with a step's parameters: where, and why — never the value (the
    text of a pydantic error quotes its input, which may be a secret)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'params'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
    return str(exc)


def validate_plan(registry: Registry, steps: Sequence[StepSpec]) -> list[StepSpec]:
    """Each step's parameters checked against its action (422 on the first bad one)."""
    checked = []
    for position, spec in enumerate(steps):
        try:
            action = registry[ACTIONS].get(spec.action)
            params = action.params.model_validate(spec.params).model_dump(mode="json")
        except (NotRegistered, ValueError, ValidationError) as exc:
            raise ValidationFailed(
                f"step {position} ({spec.name}) is invalid",
                errors=[
                    {"loc": ["steps", position], "msg": invalid_params(exc), "type": "invalid_step"}
                ],
            ) from None
        idempotent = action.idempotent if spec.idempotent is None else spec.idempotent
        checked.append(
            StepSpec(
                spec.name,
                spec.action,
                params,
                idempotent,
                spec.timeout_seconds,
                spec.stop_on_failure,
                spec.phase,
            )
        )
    return checked


async def append_event(
    session: AsyncSession, run_id: str, type: str, data: dict[str, Any] | None = None
) -> RunEvent:
    """The run's next progress event (``seq`` + 1), in the caller's transaction; its
    data is stored without secrets (every viewer follows the events)."""
    seq = await session.scalar(
        update(Run)
        .where(Run.id == run_id)
        .values(event_seq=Run.event_seq + 1)
        .returning(Run.event_seq)
    )
    if seq is None:
        raise RunNotFound(f"No run {run_id!r}")
    event = RunEvent(
        run_id=run_id, seq=seq, type=type, data=redact_value(data or {}), created_at=utcnow()
    )
    session.add(event)
    await session.flush()
    return event


Announced = tuple[str, dict[str, Any] | None]  # a progress event: its type and data


async def insert_events(
    session: AsyncSession, run_id: str, last_seq: int, events: Sequence[Announced]
) -> None:
    """Progress events numbered up to ``last_seq`` (the run's ``event_seq``, already
    moved on by their count), in one multi-row INSERT; data stored without secrets."""
    if not events:
        return
    now, first = utcnow(), last_seq - len(events) + 1
    await session.execute(
        insert(RunEvent.__table__),  # type: ignore[arg-type]
        [
            {
                "id": new_id(),
                "run_id": run_id,
                "seq": first + n,
                "type": type,
                "data": redact_value(data or {}),
                "created_at": now,
            }
            for n, (type, data) in enumerate(events)
        ],
    )


def finished_event(
    status: RunStatus, failure_type: str | None, failure_detail: str | None
) -> Announced:
    """The run's last progress event."""
    return (
        "run.finished",
        {"status": status.value, "failure_type": failure_type, "failure_detail": failure_detail},
    )


def finish_announcement(
    run: Run,
    status: RunStatus,
    failure_type: str | None,
    extra: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The outbox event announcing the run's end (a rollback is a deployment too: its end
    is announced as one): :class:`app.runs.events.RunEndedData`, with what the kind's
    finish hook adds (``extra``, its own fields and links)."""
    prefix = RunKind.DEPLOYMENT.value if run.kind == RunKind.ROLLBACK else run.kind
    data = {
        "id": run.id,
        "kind": run.kind,
        "environment": run.environment,
        "status": status.value,
        "failure_type": failure_type,
        "links": run_links(run.id),
    }
    return f"{prefix}.{past_tense(status)}", {**data, **(extra or {})}


def job_id(run_id: str, enqueue_count: int) -> str:
    """The arq job id of a run's n-th enqueue: the run id, then ``<run id>:<n>`` (arq
    refuses an id it still remembers)."""
    return run_id if enqueue_count <= 1 else f"{run_id}:{enqueue_count}"


def _notify_after_commit(uow: UnitOfWork, context: AppContext, run_id: str) -> None:
    async def _publish() -> None:
        await context.notifier.publish(run_id)

    uow.after_commit(_publish)


async def create_run(
    uow: UnitOfWork,
    context: AppContext,
    *,
    kind: RunKind,
    steps: Sequence[StepSpec],
    params: dict[str, Any] | None = None,
    requested_by: str,
    environment: str | None = None,
) -> Run:
    """Write a queued run, its steps, its first event and its outbox event; enqueue the
    job once the transaction commits."""
    plan = validate_plan(context.registry, steps)
    now = utcnow()
    run_id = new_id()
    run = Run(
        id=run_id,
        kind=kind.value,
        status=RunStatus.QUEUED.value,
        params=params or {},
        requested_by=requested_by,
        environment=environment,
        enqueue_count=1,
        created_at=now,
        updated_at=now,
        event_seq=1,
    )
    rows = [
        Step(
            run_id=run_id,
            position=position,
            name=spec.name,
            action=spec.action,
            params=spec.params,
            idempotent=bool(spec.idempotent),
            timeout_seconds=spec.timeout_seconds,
            stop_on_failure=spec.stop_on_failure,
            phase=spec.phase.value,
        )
        for position, spec in enumerate(plan)
    ]
    first = RunEvent(
        run_id=run_id, seq=1, type="run.queued", data={"status": "queued"}, created_at=now
    )
    # Core INSERTs (the steps in one), nothing left for the ORM to flush or read back.
    await insert_rows(uow.session, [run])
    await insert_rows(uow.session, rows)
    await insert_rows(uow.session, [first])
    set_committed_value(run, "steps", rows)  # the caller reads them without a query
    await add_event(
        uow.session,
        "run.queued",
        {
            "id": run.id,
            "kind": run.kind,
            "environment": run.environment,
            "status": RunStatus.QUEUED.value,
            "links": run_links(run.id),
        },
    )
    run_id, queue = run.id, context.queue

    async def _enqueue() -> None:
        await queue.enqueue(JobName.EXECUTE_RUN, run_id, job_id=run_id)
        logger.info(
            "run queued", extra={"event": "run.queued", "run_id": run_id, "kind": kind.value}
        )

    uow.after_commit(_enqueue)
    _notify_after_commit(uow, context, run_id)
    return run


async def get_run(
    session: AsyncSession, run_id: str, principal: Principal | None, *, kind: RunKind | None = None
) -> Run:
    """A run with its steps; 404 when it does not exist or the caller may not see it."""
    statement = readable(
        select(Run).where(Run.id == run_id).options(selectinload(Run.steps)),
        Run.environment,
        principal,
    )
    if kind is not None:
        statement = statement.where(Run.kind == kind.value)
    run = await session.scalar(statement.execution_options(populate_existing=True))
    if run is None:
        raise RunNotFound(f"No run {run_id!r}")
    return run


@dataclass(frozen=True)
class RunFilters:
    kind: RunKind | None = None
    status: RunStatus | None = None
    environment: str | None = None
    requested_by: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


async def list_page(
    session: AsyncSession, filters: RunFilters, page: CursorParams, principal: Principal
) -> tuple[Sequence[Run], str | None]:
    statement = readable(select(Run).options(selectinload(Run.steps)), Run.environment, principal)
    if filters.kind is not None:
        statement = statement.where(Run.kind == filters.kind.value)
    if filters.status is not None:
        statement = statement.where(Run.status == filters.status.value)
    if filters.environment is not None:
        statement = statement.where(Run.environment == filters.environment)
    if filters.requested_by is not None:
        statement = statement.where(Run.requested_by == filters.requested_by)
    if filters.since is not None:
        statement = statement.where(Run.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(Run.created_at < filters.until)
    return await paginate(session, statement, page, created_at=Run.created_at, id=Run.id)


async def wait_terminal(
    context: AppContext, run_id: str, principal: Principal | None, seconds: float
) -> Run:
    """The run once it is terminal, or as it is when ``seconds`` have passed.

    Holds no database connection while waiting: it reads, then sleeps until the run's
    change notification (or a bounded back-off timeout) wakes it.
    """
    deadline = time.monotonic() + max(0.0, seconds)
    backoff = 1.0
    with context.notifier.watch(run_id) as changed:
        while True:
            changed.clear()
            async with context.sessionmaker() as session:
                run = await get_run(session, run_id, principal)
            remaining = deadline - time.monotonic()
            if run.status in TERMINAL_STATUSES or remaining <= 0:
                return run
            await wait_for(changed, min(remaining, backoff))
            backoff = min(backoff * 2, 5.0)


async def events_after(
    session: AsyncSession, run_id: str, seq: int, limit: int = 500
) -> list[RunEvent]:
    rows = await session.scalars(
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.seq > seq)
        .order_by(RunEvent.seq)
        .limit(limit)
    )
    return list(rows)


async def cancel(uow: UnitOfWork, context: AppContext, principal: Principal, run_id: str) -> Run:
    """A queued run ends ``cancelled`` at once; a running one stops after its current
    step (its worker sees the request); a finished one is a 409."""
    run = await get_run(uow.session, run_id, principal)
    if run.status in TERMINAL_STATUSES:
        raise RunAlreadyFinished(f"Run {run_id} already ended with status {run.status}")
    now = utcnow()
    if run.status == RunStatus.QUEUED:
        for step in run.steps:
            if step.status == StepStatus.PENDING:
                step.status = StepStatus.CANCELLED.value
        await finish(
            uow,
            context,
            run,
            RunStatus.CANCELLED,
            failure_type="/problems/cancelled",
            failure_detail=f"cancelled by {principal.actor} before it started",
        )
        kind, environment = run.kind, run.environment

        async def _ended() -> None:
            context.metrics.observe_run(kind, RunStatus.CANCELLED, None, environment=environment)
            logger.info(
                "run cancelled before it started",
                extra={
                    "event": "run.finished",
                    "status": "cancelled",
                    "run_id": run_id,
                    "kind": kind,
                },
            )

        uow.after_commit(_ended)
    else:
        run.cancel_requested_at = now
        await append_event(uow.session, run.id, "run.cancel_requested", {"by": principal.actor})
        _notify_after_commit(uow, context, run.id)
        logger.info("run cancellation requested", extra={"run_id": run_id})
    await audit_service.record(
        uow.session,
        principal,
        action="run.cancel",
        resource_type="run",
        resource_id=run.id,
        summary={"kind": run.kind, "status_before": run.status},
    )
    await uow.session.flush()
    return run


async def finish(
    uow: UnitOfWork,
    context: AppContext,
    run: Run,
    status: RunStatus,
    *,
    failure_type: str | None = None,
    failure_detail: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """End a run: status, its final progress event and its outbox event, together."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"{status} is not a terminal status")
    now = utcnow()
    run.status = status.value
    run.finished_at = now
    run.updated_at = now
    run.lease_owner = None
    run.lease_expires_at = None
    run.failure_type = failure_type
    run.failure_detail = failure_detail
    if result is not None:
        run.result = result
    await uow.session.flush()
    hooks = kinds.hooks(context.registry, run.kind)
    announced = await hooks.on_finish(uow, context, run) if hooks.on_finish is not None else None
    await kinds.run_ended(uow, context, run)
    await append_event(uow.session, run.id, *finished_event(status, failure_type, failure_detail))
    if hooks.announce:
        await add_event(uow.session, *finish_announcement(run, status, failure_type, announced))
    _notify_after_commit(uow, context, run.id)


def past_tense(status: RunStatus) -> str:
    """How a run's end is named in event and audit actions (``deployment.succeeded``)."""
    return {
        RunStatus.SUCCESS: "succeeded",
        RunStatus.FAILURE: "failed",
        RunStatus.ERROR: "failed",  # the data's status tells failure from error
        RunStatus.CANCELLED: "cancelled",
        RunStatus.ROLLED_BACK: "rolled_back",
    }.get(status, status.value)


async def release(
    context: AppContext,
    run_id: str,
    epoch: int,
    enqueue_count: int,
    *,
    reason: str,
    step_ends: Sequence[tuple[str, dict[str, Any]]] = (),
    events: Sequence[Announced] = (),
) -> bool:
    """Put a claimed run back to ``queued`` and enqueue it under a fresh job id, if claim
    ``epoch`` still holds it; returns whether it did. Its next claim resumes after the
    last completed step, as after any interruption. ``step_ends`` (step id, values) and
    ``events``: what the worker knows ended but had not committed yet."""
    async with context.unit_of_work() as uow:
        changed = await uow.session.execute(
            update(Run)
            .where(
                Run.id == run_id,
                Run.lease_epoch == epoch,
                Run.status == RunStatus.IN_PROGRESS.value,
            )
            .values(
                status=RunStatus.QUEUED.value,
                lease_owner=None,
                lease_expires_at=None,
                enqueue_count=enqueue_count + 1,
                updated_at=utcnow(),
            )
        )
        if getattr(changed, "rowcount", 0) != 1:
            return False
        for step_id, values in step_ends:
            await uow.session.execute(update(Step).where(Step.id == step_id).values(**values))
        for type_, data in events:
            await append_event(uow.session, run_id, type_, data)
        await append_event(uow.session, run_id, "run.requeued", {"reason": reason})
        enqueue_after_commit(uow, context.queue, run_id, enqueue_count + 1)
        _notify_after_commit(uow, context, run_id)
    return True


@dataclass
class Reconciled:
    requeued_expired: int = 0
    reenqueued_stale: int = 0


async def reconcile(
    context: AppContext,
    *,
    stale_after: dt.timedelta,
    batch: int = 200,
    budget: dt.timedelta | None = None,
) -> Reconciled:
    """Liveness: runs whose worker lost its lease go back to ``queued``; queued runs
    whose arq job is gone (Redis restarted or flushed) are enqueued again under a fresh
    job id. Every change is a conditional update, so two reconcilers never double up.
    With a ``budget``, no new run is looked at once it is spent (a busy database makes
    a pass end early, with what it did committed, instead of being cut off by the job's
    timeout); the next pass takes the rest."""
    done = Reconciled()
    now = utcnow()
    ends = time.monotonic() + budget.total_seconds() if budget is not None else math.inf
    async with context.sessionmaker() as session:
        expired = (
            await session.execute(
                select(Run.id, Run.lease_epoch, Run.enqueue_count)
                .where(Run.status == RunStatus.IN_PROGRESS.value, Run.lease_expires_at < now)
                .limit(batch)
            )
        ).all()
        stale = []
        for run in await session.scalars(
            select(Run)
            .where(Run.status == RunStatus.QUEUED.value, Run.updated_at < now - stale_after)
            .order_by(Run.created_at)
            .limit(batch)
        ):
            if time.monotonic() > ends:
                break
            waits_turn = kinds.hooks(context.registry, run.kind).waits_turn
            if waits_turn is not None and await waits_turn(session, run):
                continue  # the run ahead of it enqueues it when it ends
            stale.append((run.id, run.enqueue_count))
    for run_id, epoch, count in expired:
        if time.monotonic() > ends:
            break
        if await release(context, run_id, epoch, count, reason="lease_expired"):
            done.requeued_expired += 1
    waiting = await _arq_knows(context, [job_id(run_id, count) for run_id, count in stale])
    for (run_id, count), known in zip(stale, waiting, strict=True):
        if known:
            continue  # still waiting in arq's queue (workers busy): leave it
        if time.monotonic() > ends:
            break  # the budget is spent: the next pass takes the rest
        async with context.unit_of_work() as uow:
            changed = await uow.session.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.status == RunStatus.QUEUED.value,
                    Run.enqueue_count == count,
                )
                .values(enqueue_count=count + 1, updated_at=now)
            )
            if getattr(changed, "rowcount", 0) != 1:
                continue
            enqueue_after_commit(uow, context.queue, run_id, count + 1)
        done.reenqueued_stale += 1
    if done.requeued_expired or done.reenqueued_stale:
        logger.info(
            "reconciled: %d expired leases requeued, %d lost jobs enqueued again",
            done.requeued_expired,
            done.reenqueued_stale,
        )
    return done


def enqueue_after_commit(uow: UnitOfWork, queue: Queue, run_id: str, count: int) -> None:
    async def _enqueue() -> None:
        await queue.enqueue(JobName.EXECUTE_RUN, run_id, job_id=job_id(run_id, count))

    uow.after_commit(_enqueue)


async def _arq_knows(context: AppContext, arq_job_ids: list[str]) -> list[bool]:
    """Whether each job still waits in arq's queue (one round trip for all). A job arq
    marked in progress while its run is still queued was taken by a worker that died
    before its claim (arq keeps that mark for the whole job timeout): it is not a live
    job. Redis unreachable: none is known (each is enqueued again)."""
    if not arq_job_ids:
        return []
    try:
        async with context.redis.pipeline(transaction=False) as pipe:
            for arq_job_id in arq_job_ids:
                pipe.exists(job_key_prefix + arq_job_id)
                pipe.exists(in_progress_key_prefix + arq_job_id)
            found = await pipe.execute()
    except Exception:
        return [False] * len(arq_job_ids)
    return [
        bool(waiting) and not taken for waiting, taken in zip(found[::2], found[1::2], strict=True)
    ]


async def count_by_kind_and_status(session: AsyncSession) -> list[tuple[str, str, int]]:
    """How many runs there are of each kind in each status (the ``formula_ops_runs`` gauge)."""
    rows = await session.execute(
        select(Run.kind, Run.status, func.count()).group_by(Run.kind, Run.status)
    )
    return [(kind, status, count) for kind, status, count in rows]
