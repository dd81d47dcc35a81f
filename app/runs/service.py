"""Run lifecycle rules: create (row + event + enqueue after commit), claim, complete.

Executors for each run kind plug in through :func:`register_executor`; the worker's job
only claims a run and hands it to :func:`execute`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import update

from app.db import UnitOfWork, utcnow
from app.outbox import add_event
from app.queue import JobName, Queue
from app.runs.models import TERMINAL_STATUSES, Run, RunKind, RunStatus

logger = logging.getLogger(__name__)

Executor = Callable[[UnitOfWork, Run], Awaitable[RunStatus]]
_EXECUTORS: dict[RunKind, Executor] = {}


def register_executor(kind: RunKind, executor: Executor) -> None:
    _EXECUTORS[kind] = executor


async def create_run(
    uow: UnitOfWork,
    queue: Queue,
    *,
    kind: RunKind,
    params: dict[str, Any],
    requested_by: str | None,
    environment: str | None = None,
) -> Run:
    """Write a queued run and its event; enqueue its job once the transaction commits."""
    run = Run(
        kind=kind.value,
        status=RunStatus.QUEUED.value,
        params=params,
        requested_by=requested_by,
        environment=environment,
        enqueue_count=1,
    )
    uow.session.add(run)
    await uow.session.flush()
    await add_event(uow.session, "run.queued", {"id": run.id, "kind": run.kind})
    run_id = run.id

    async def _enqueue() -> None:
        await queue.enqueue(JobName.EXECUTE_RUN, run_id, job_id=run_id)

    uow.after_commit(_enqueue)
    return run


async def claim(uow: UnitOfWork, run_id: str, *, owner: str, lease: dt.timedelta) -> Run | None:
    """Take a queued run (queued -> in_progress); None when another worker has it or it is done.

    The conditional update is the whole guarantee: a duplicate arq job, or a second
    worker, matches no row and does nothing.
    """
    now = utcnow()
    result = await uow.session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)
        .values(
            status=RunStatus.IN_PROGRESS.value,
            lease_owner=owner,
            lease_expires_at=now + lease,
            lease_epoch=Run.lease_epoch + 1,
            started_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    return await uow.session.get(Run, run_id, populate_existing=True)


async def complete(
    uow: UnitOfWork,
    run: Run,
    status: RunStatus,
    *,
    failure_type: str | None = None,
    failure_detail: str | None = None,
) -> None:
    """End a run in a terminal status and announce it, in the caller's transaction."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"{status} is not a terminal status")
    now = utcnow()
    run.status = status.value
    run.finished_at = now
    run.lease_owner = None
    run.lease_expires_at = None
    run.failure_type = failure_type
    run.failure_detail = failure_detail
    await uow.session.flush()
    await add_event(
        uow.session,
        f"run.{status.value}",
        {"id": run.id, "kind": run.kind, "failure_type": failure_type},
    )


async def execute(uow: UnitOfWork, run: Run) -> RunStatus:
    """Run the executor of the run's kind; a kind without one ends the run in ``error``."""
    executor = _EXECUTORS.get(RunKind(run.kind))
    if executor is None:
        await complete(
            uow,
            run,
            RunStatus.ERROR,
            failure_type="/problems/unsupported-run-kind",
            failure_detail=f"no executor is installed for runs of kind {run.kind!r}",
        )
        return RunStatus.ERROR
    status = await executor(uow, run)
    await complete(uow, run, status)
    return status


async def run_job(
    unit_of_work: Callable[[], UnitOfWork], run_id: str, *, owner: str, lease: dt.timedelta
) -> RunStatus | None:
    """What a worker does with a run id: claim it (committed), then execute it.

    Returns None when there was nothing to do (another worker has the run, or it ended).
    """
    async with unit_of_work() as uow:
        run = await claim(uow, run_id, owner=owner, lease=lease)
    if run is None:
        logger.info("run %s is not queued; nothing to do", run_id)
        return None
    async with unit_of_work() as uow:
        run = await uow.session.get_one(Run, run_id)
        return await execute(uow, run)
