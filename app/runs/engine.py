"""Executing a run, step by step, under a lease.

- **Claim**: a conditional update (``queued -> in_progress``, ``lease_epoch + 1``). A
  duplicate job, or a second worker, matches nothing and leaves.
- **Lease**: renewed in the background while the run executes. Every write the worker
  makes first checks that the run still carries its epoch (the fence): a worker that
  was paused or cut off past its lease, and whose run another worker took over, commits
  nothing.
- **Checkpoints**: each step's start and end are committed before the next step; a
  resumed run skips finished steps. A step that was running when its worker died is
  run again only if it is idempotent; otherwise the run fails with ``interrupted``.
- **Cancellation** is cooperative: the worker checks before each step.
- **Few statements**: the fence moves the run's event counter and reads its cancellation
  in one UPDATE; a step's end rides on the run's next transaction (the next step's start,
  or the run's end), so it is still committed before the next step starts; events go in
  one multi-row INSERT, and nothing just written is read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.core.logging import bind_log_context
from app.core.redaction import Scrubber
from app.core.registry import NotRegistered
from app.core.tasks import run_to_end
from app.outbox.service import add_event
from app.runs import kinds
from app.runs import service as run_service
from app.runs.actions import ACTIONS, StepContext, StepOutcome, bounded
from app.runs.models import TERMINAL_STATUSES, Phase, Run, RunStatus, Step, StepStatus

logger = logging.getLogger(__name__)
# The database down or unreachable (not a constraint or a bug): what a run rides out.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
# The runner's UPDATEs run in a unit of work of their own, whose session holds none of
# the rows they change: the ORM has nothing to synchronise, and its default ("auto":
# evaluate the WHERE clause against every object in the session, before and after) was
# about a tenth of a worker's CPU per run (bench/README.md, run_latency.py).
UNSYNCED: dict[str, Any] = {"synchronize_session": False}
RETURNED: dict[str, Any] = {"synchronize_session": False, "populate_existing": True}


class LeaseLost(Exception):
    """Another worker owns the run now; stop without writing anything."""


@dataclass
class _Carried:
    """Writes that ride on the run's next fenced transaction: a step's end (its row and
    its ``step.finished`` event), committed before the next step starts or with the run's
    end."""

    steps: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # id, values
    events: list[run_service.Announced] = field(default_factory=list)


async def _fence(
    uow: UnitOfWork,
    run_id: str,
    epoch: int,
    carried: _Carried | None = None,
    events: Sequence[run_service.Announced] = (),
    *,
    cancellable: bool = False,
) -> bool:
    """Fail unless this worker's claim (``epoch``) still holds; on PostgreSQL this also
    locks the run row until the transaction ends, so a takeover waits for it. Writes what
    is ``carried`` and appends ``events`` (unless ``cancellable`` and cancellation was
    requested), numbering them by the same UPDATE. Returns whether cancellation was
    requested."""
    before = list(carried.events) if carried else []
    count = len(before) + len(events)
    moved: Any = Run.event_seq + count
    if cancellable and events:
        moved = case(
            (Run.cancel_requested_at.is_(None), Run.event_seq + count),
            else_=Run.event_seq + len(before),
        )
    row = (
        await uow.session.execute(
            update(Run)
            .where(
                Run.id == run_id,
                Run.lease_epoch == epoch,
                Run.status == RunStatus.IN_PROGRESS.value,
            )
            .values(updated_at=utcnow(), event_seq=moved)
            .returning(Run.event_seq, Run.cancel_requested_at),
            execution_options=UNSYNCED,
        )
    ).first()
    if row is None:
        raise LeaseLost(run_id)
    cancelled = row.cancel_requested_at is not None
    if carried is not None:
        await _write_carried(uow, carried)
    written = before if cancellable and cancelled else [*before, *events]
    await run_service.insert_events(uow.session, run_id, int(row.event_seq), written)
    return cancelled


async def _write_carried(uow: UnitOfWork, carried: _Carried) -> None:
    for step_id, values in carried.steps:
        await uow.session.execute(
            update(Step).where(Step.id == step_id).values(**values), execution_options=UNSYNCED
        )
    written_steps, written_events = len(carried.steps), len(carried.events)

    async def forget() -> None:  # only once committed: a failed commit keeps them to retry
        del carried.steps[:written_steps]
        del carried.events[:written_events]

    uow.after_commit(forget)


async def claim(context: AppContext, run_id: str, owner: str) -> int | None:
    """Take a queued run; returns the new lease epoch, or None when there is nothing to do."""
    claimed = await _claim(context, run_id, owner)
    return claimed[0] if claimed else None


class _Deferred(Exception):
    """The run's kind says it may not start yet (its claim is rolled back)."""


async def _claim(
    context: AppContext, run_id: str, owner: str
) -> tuple[int, Run, list[Step]] | None:
    """Claim the run and read it and its steps, in one transaction."""
    now = utcnow()
    lease = dt.timedelta(seconds=context.settings.run_lease_seconds)
    try:
        async with context.unit_of_work() as uow:
            # The claimed row comes back whole (nothing read again); its event counter
            # already counts the run.started event.
            run = (
                await uow.session.scalars(
                    update(Run)
                    .where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)
                    .values(
                        status=RunStatus.IN_PROGRESS.value,
                        lease_owner=owner,
                        lease_expires_at=now + lease,
                        lease_epoch=Run.lease_epoch + 1,
                        started_at=func.coalesce(Run.started_at, now),
                        updated_at=now,
                        event_seq=Run.event_seq + 1,
                    )
                    .returning(Run),
                    execution_options=RETURNED,
                )
            ).first()
            if run is None:
                return None
            epoch = int(run.lease_epoch)
            guard = kinds.hooks(context.registry, run.kind).claim_guard
            if guard is not None and not await guard(uow.session, run):
                raise _Deferred(run_id)
            await run_service.insert_events(
                uow.session,
                run_id,
                run.event_seq,
                [("run.started", {"worker": owner, "attempt": epoch})],
            )
            steps = list(
                await uow.session.scalars(
                    select(Step).where(Step.run_id == run_id).order_by(Step.position)
                )
            )
    except (_Deferred, IntegrityError):
        # A guard said "not yet", or a database constraint it relies on refused.
        logger.info("run %s waits: its kind does not let it start yet", run_id)
        return None
    await context.notifier.publish(run_id)
    return epoch, run, steps


async def execute(context: AppContext, run_id: str, owner: str) -> RunStatus | None:
    """Claim ``run_id`` and run its remaining steps; None when there was nothing to do."""
    claimed = await _claim(context, run_id, owner)
    if claimed is None:
        logger.info("run %s is not queued; nothing to do", run_id)
        return None
    epoch, run, steps = claimed
    bind_log_context(kind=run.kind, actor=run.requested_by)
    logger.info(
        "run claimed by %s (attempt %d)",
        owner,
        epoch,
        extra={"event": "run.claimed", "attempt": epoch, "worker": owner},
    )
    renewer = asyncio.create_task(_renew_lease(context, run_id, epoch), name=f"lease-{run_id}")
    carried = _Carried()
    try:
        return await _run_steps(context, run, epoch, steps, carried)
    except LeaseLost:
        logger.warning("run %s: lease lost (epoch %d); another worker owns it", run_id, epoch)
        return None
    except DATABASE_DOWN as exc:
        # The control plane's own database failed mid-run (a restart, a dropped
        # connection). Hand the run back as soon as the database answers again, instead
        # of leaving it claimed until its lease expires.
        logger.warning(
            "run %s: the database failed (%s); releasing the run", run_id, type(exc).__name__
        )
        renewer.cancel()
        # A step that ended but whose end was not committed yet is written with the
        # release, so the resumed run does not take it for interrupted.
        await _release_when_back(context, run, epoch, carried)
        return None
    except asyncio.CancelledError:
        # The worker is stopping (SIGTERM during an upgrade or a restart): hand the run
        # back now, so that another worker resumes it at once instead of after its lease
        # expires. The step it interrupted runs again if it is idempotent (as after a
        # crash); the step ends not committed yet go with the release.
        renewer.cancel()
        with contextlib.suppress(Exception):
            if await run_to_end(
                run_service.release(
                    context,
                    run.id,
                    epoch,
                    run.enqueue_count,
                    reason="worker_stopped",
                    step_ends=carried.steps,
                    events=carried.events,
                )
            ):
                logger.info("run %s: handed back as its worker stops; it resumes", run.id)
        raise
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await renewer


async def _release_when_back(context: AppContext, run: Run, epoch: int, carried: _Carried) -> None:
    """Retry :func:`run_service.release` with bounded back-off for at most one lease; if
    the database stays down that long, the reconciler takes over as for any expiry."""
    delay, deadline = 0.2, asyncio.get_running_loop().time() + context.settings.run_lease_seconds
    while True:
        try:
            if await run_service.release(
                context,
                run.id,
                epoch,
                run.enqueue_count,
                reason="database_error",
                step_ends=carried.steps,
                events=carried.events,
            ):
                logger.info("run %s: released after a database failure; it resumes", run.id)
            return
        except DATABASE_DOWN:
            if asyncio.get_running_loop().time() + delay > deadline:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _renew_lease(context: AppContext, run_id: str, epoch: int) -> None:
    seconds = context.settings.run_lease_seconds
    while True:
        await asyncio.sleep(seconds / 3)
        try:
            async with context.unit_of_work() as uow:
                result = await uow.session.execute(
                    update(Run)
                    .where(
                        Run.id == run_id,
                        Run.lease_epoch == epoch,
                        Run.status == RunStatus.IN_PROGRESS.value,
                    )
                    .values(lease_expires_at=utcnow() + dt.timedelta(seconds=seconds)),
                    execution_options=UNSYNCED,
                )
            if getattr(result, "rowcount", 0) != 1:
                return  # lost or finished: the next fenced write will tell the runner
        except Exception:
            logger.warning("could not renew the lease of run %s; retrying", run_id)


async def _run_steps(
    context: AppContext, run: Run, epoch: int, steps: list[Step], carried: _Carried
) -> RunStatus:
    """``carried``: the last step's end, written by the run's next transaction."""
    run_id = run.id
    hooks = kinds.hooks(context.registry, run.kind)
    main = [s for s in steps if s.phase != Phase.ROLLBACK]
    compensation = [s for s in steps if s.phase == Phase.ROLLBACK]
    interrupted = await _settle_interrupted(context, run_id, epoch, steps)
    if interrupted is not None and not compensation:
        return await _finish(
            context,
            run_id,
            epoch,
            RunStatus.FAILURE,
            carried=carried,
            failure_type="/problems/interrupted",
            failure_detail=f"step {interrupted.position} ({interrupted.name}) was running when "
            "its worker stopped, and it is not safe to run twice",
        )
    stopped, cancelled = interrupted, False
    if stopped is None:
        for step in main:
            if step.status == StepStatus.FAILURE and step.stop_on_failure:
                stopped = step  # an earlier attempt failed here and stopped before ending
                break
            if step.status in (StepStatus.SUCCESS, StepStatus.FAILURE, StepStatus.SKIPPED):
                continue
            outcome = await _run_step(context, run_id, epoch, step, carried)
            if outcome is None:
                cancelled = True
                break
            if outcome.status == StepStatus.FAILURE and step.stop_on_failure:
                stopped = step
                break
    if cancelled and not compensation:
        return await _cancel(context, run, epoch, carried)
    ending = kinds.Ending(cancelled=cancelled, stopped_at=stopped)
    if compensation:
        started = any(s.status != StepStatus.PENDING for s in compensation)
        wanted = (stopped is not None or cancelled) and (
            hooks.compensate is None or hooks.compensate(run, ending)
        )
        if started or wanted:
            logger.info("rolling back: %d compensation steps", len(compensation))
            for step in compensation:
                if step.status in (StepStatus.SUCCESS, StepStatus.FAILURE, StepStatus.SKIPPED):
                    continue
                await _run_step(context, run_id, epoch, step, carried, cancellable=False)
            ending = kinds.Ending(cancelled=cancelled, stopped_at=stopped, compensated=True)
        await _skip_pending(context, run_id, epoch, carried, steps)
    status, failure_type, detail, result = kinds.finalize(hooks, steps, ending)
    return await _finish(
        context,
        run_id,
        epoch,
        status,
        carried=carried,
        failure_type=failure_type,
        failure_detail=detail,
        result=result,
    )


async def _skip_pending(
    context: AppContext, run_id: str, epoch: int, carried: _Carried, steps: list[Step]
) -> None:
    """Steps that will not run (rollback steps after a success, main steps after a
    failure) end ``skipped``."""
    async with context.unit_of_work() as uow:
        await _fence(uow, run_id, epoch, carried)
        await uow.session.execute(
            update(Step)
            .where(Step.run_id == run_id, Step.status == StepStatus.PENDING.value)
            .values(status=StepStatus.SKIPPED.value),
            execution_options=UNSYNCED,
        )
    for step in steps:
        if step.status == StepStatus.PENDING:
            step.status = StepStatus.SKIPPED.value


async def _settle_interrupted(
    context: AppContext, run_id: str, epoch: int, steps: list[Step]
) -> Step | None:
    """Steps left ``in_progress`` by a dead worker: reset the idempotent ones; return the
    first that is not (the run cannot go on)."""
    for step in steps:
        if step.status == StepStatus.FAILURE and (step.result or {}).get("interrupted"):
            return step  # settled by an earlier attempt that stopped before ending the run
    stuck = [s for s in steps if s.status == StepStatus.IN_PROGRESS]
    if not stuck:
        return None
    async with context.unit_of_work() as uow:
        await _fence(uow, run_id, epoch)
        for step in stuck:
            row = await uow.session.get_one(Step, step.id)
            if not step.idempotent:
                row.status = StepStatus.FAILURE.value
                row.finished_at = utcnow()
                row.error = "interrupted: its worker stopped while it ran"
                row.result = {"interrupted": True}
                await run_service.append_event(
                    uow.session, run_id, "step.finished", _step_data(row)
                )
                return step
            row.status = StepStatus.PENDING.value
            step.status = StepStatus.PENDING.value
            await run_service.append_event(
                uow.session,
                run_id,
                "step.retrying",
                {"position": row.position, "name": row.name, "reason": "worker stopped"},
            )
    return None


async def _cancel(context: AppContext, run: Run, epoch: int, carried: _Carried) -> RunStatus:
    return await _finish(
        context,
        run.id,
        epoch,
        RunStatus.CANCELLED,
        carried=carried,
        failure_type="/problems/cancelled",
        failure_detail="cancelled while running; it stopped after its current step",
        pending_to=StepStatus.CANCELLED,
    )


def _step_data(step: Any) -> dict[str, Any]:
    return {
        "position": step.position,
        "name": step.name,
        "action": step.action,
        "status": step.status,
        "level": step.level,
        "attempts": step.attempts,
        "error": step.error,
    }


async def _run_step(
    context: AppContext,
    run_id: str,
    epoch: int,
    step: Step,
    carried: _Carried,
    *,
    cancellable: bool = True,
) -> StepOutcome | None:
    """Run one step; its start is committed (with the previous step's end) before it
    runs, and its end is carried to the run's next transaction. None when the run was
    cancelled before the step started (cooperative cancellation)."""
    step.status = StepStatus.IN_PROGRESS.value
    step.attempts += 1
    step.started_at = utcnow()
    async with context.unit_of_work() as uow:
        cancelled = await _fence(
            uow,
            run_id,
            epoch,
            carried,
            [("step.started", _step_data(step))],
            cancellable=cancellable,
        )
        if cancelled and cancellable:
            step.status = StepStatus.PENDING.value
            step.attempts -= 1
            return None
        await uow.session.execute(
            update(Step)
            .where(Step.id == step.id)
            .values(
                status=step.status,
                attempts=step.attempts,
                started_at=step.started_at,
                finished_at=None,
            ),
            execution_options=UNSYNCED,
        )
    await context.notifier.publish(run_id)
    bind_log_context(step=f"{step.position}:{step.name}")
    began = time.perf_counter()
    logger.info(
        "step started: %s", step.action, extra={"event": "step.started", "action": step.action}
    )
    # What the step prints or reports is stored without the secrets it was given.
    scrub = Scrubber.of(step.params)

    async def log(line: str) -> None:
        async with context.unit_of_work() as uow:
            await _fence(
                uow,
                run_id,
                epoch,
                events=[("log", {"position": step.position, "line": scrub.text(line)[:2000]})],
            )
        await context.notifier.publish(run_id)

    outcome = await _perform(context, step, log)
    outcome.output = scrub.text(outcome.output)
    outcome.error = scrub.text(outcome.error) if outcome.error is not None else None
    outcome.data = scrub.value(outcome.data)

    output, truncated = bounded(outcome.output)
    step.status = outcome.status.value
    step.level = outcome.level.value if outcome.level else None
    step.result, step.error = outcome.data, outcome.error
    carried.steps.append(
        (
            step.id,
            {
                "status": step.status,
                "finished_at": utcnow(),
                "output": output,
                "output_truncated": truncated,
                "level": step.level,
                "result": step.result,
                "error": step.error,
            },
        )
    )
    carried.events.append(("step.finished", {**_step_data(step), "output": output[:2000]}))
    took = (time.perf_counter() - began) * 1000
    failed = step.status == StepStatus.FAILURE
    logger.log(
        logging.WARNING if failed else logging.INFO,
        "step ended: %s in %.0f ms%s",
        step.status,
        took,
        f": {(step.error or '')[:500]}" if failed else "",
        extra={
            "event": "step.finished",
            "action": step.action,
            "status": step.status,
            "duration_ms": round(took, 1),
        },
    )
    context.metrics.observe_step(step.action, step.status)
    bind_log_context(step=None)
    return outcome


async def _perform(context: AppContext, step: Step, log: Any) -> StepOutcome:
    try:
        action = context.registry[ACTIONS].get(step.action)
        params = action.params.model_validate(step.params)
    except (NotRegistered, ValueError, ValidationError) as exc:
        return StepOutcome(
            StepStatus.FAILURE, error=f"invalid step: {run_service.invalid_params(exc)}"
        )
    try:
        async with asyncio.timeout(step.timeout_seconds):
            return await action.handler(
                params, StepContext(context, log, step.run_id, step.position)
            )
    except TimeoutError:
        return StepOutcome(
            StepStatus.FAILURE,
            error=f"timed out after {step.timeout_seconds} s",
            data={"timeout": True},
        )
    except (LeaseLost, OperationalError):
        # Not the step's outcome: the control plane's own database failed. The run
        # stays claimed; once its lease expires it resumes and the step runs again
        # if it is idempotent.
        raise
    except Exception as exc:
        logger.exception("step %s (%s) raised", step.name, step.action)
        return StepOutcome(StepStatus.FAILURE, error=f"{type(exc).__name__}: {exc}"[:2000])


async def _finish(
    context: AppContext,
    run_id: str,
    epoch: int,
    status: RunStatus,
    *,
    carried: _Carried | None = None,
    failure_type: str | None = None,
    failure_detail: str | None = None,
    result: dict[str, Any] | None = None,
    pending_to: StepStatus | None = None,
) -> RunStatus:
    """End the run in one transaction: the carried step end, the run's status (one fenced
    UPDATE, which returns the row), its kind's finish hook, its last progress event and
    its outbox event. ``pending_to``: what its steps still pending become."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"{status} is not a terminal status")
    carried = carried or _Carried()
    events = [*carried.events, run_service.finished_event(status, failure_type, failure_detail)]
    now = utcnow()
    values: dict[str, Any] = {
        "status": status.value,
        "finished_at": now,
        "updated_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "failure_type": failure_type,
        "failure_detail": failure_detail,
        "event_seq": Run.event_seq + len(events),
    }
    if result is not None:
        values["result"] = result
    async with context.unit_of_work() as uow:
        ended = (
            await uow.session.scalars(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.lease_epoch == epoch,
                    Run.status == RunStatus.IN_PROGRESS.value,
                )
                .values(**values)
                .returning(Run),
                execution_options=RETURNED,
            )
        ).first()
        if ended is None:
            raise LeaseLost(run_id)
        await _write_carried(uow, carried)
        if pending_to is not None:
            await uow.session.execute(
                update(Step)
                .where(Step.run_id == run_id, Step.status == StepStatus.PENDING.value)
                .values(status=pending_to.value),
                execution_options=UNSYNCED,
            )
        hooks = kinds.hooks(context.registry, ended.kind)
        on_finish = hooks.on_finish
        announced = await on_finish(uow, context, ended) if on_finish is not None else None
        await kinds.run_ended(uow, context, ended)
        await run_service.insert_events(uow.session, run_id, ended.event_seq, events)
        if hooks.announce:
            await add_event(
                uow.session,
                *run_service.finish_announcement(ended, status, failure_type, announced),
            )
    await context.notifier.publish(run_id)
    seconds = _duration(ended.started_at, ended.finished_at)
    context.metrics.observe_run(ended.kind, status.value, seconds, environment=ended.environment)
    logger.info(
        "run %s%s",
        "rolled back" if status == RunStatus.ROLLED_BACK else f"finished: {status.value}",
        f" in {seconds:.2f} s" if seconds is not None else "",
        extra={
            "event": "run.finished",
            "status": status.value,
            "duration_ms": round(seconds * 1000, 1) if seconds is not None else None,
        },
    )
    return status


def _duration(started: dt.datetime | None, finished: dt.datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return (finished - started).total_seconds()
