"""The reconciler keeps runs alive when Redis or a worker lets them down."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from sqlalchemy import update

from app.core.context import AppContext
from app.core.db import utcnow
from app.core.settings import Settings
from app.runs import engine
from app.runs import service as run_service
from app.runs.models import TERMINAL_STATUSES, Run, RunKind, RunStatus
from app.runs.service import StepSpec
from tests.helpers import run_worker_burst
from workers.main import create_worker, stop_worker
from workers.wake import WakeableWorker

STALE = dt.timedelta(seconds=10)


async def _create(context: AppContext) -> str:
    async with context.unit_of_work() as uow:
        run = await run_service.create_run(
            uow,
            context,
            kind=RunKind.PLAYBOOK,
            steps=[StepSpec("pause", "wait", {"seconds": 0})],
            requested_by="tests",
        )
    return run.id


async def _age(context: AppContext, run_id: str, **values: object) -> None:
    async with context.unit_of_work() as uow:
        await uow.session.execute(update(Run).where(Run.id == run_id).values(**values))


async def _get(context: AppContext, run_id: str) -> Run:
    async with context.sessionmaker() as session:
        return await session.get_one(Run, run_id)


class TestReconciler:
    async def test_a_queued_run_whose_job_redis_lost_is_enqueued_again(
        self, context: AppContext, settings: Settings
    ) -> None:
        run_id = await _create(context)
        # what a Redis restart without persistence does to this run: queue and job gone
        await context.redis.delete(settings.queue_name, f"arq:job:{run_id}")
        await _age(context, run_id, updated_at=utcnow() - 2 * STALE)
        done = await run_service.reconcile(context, stale_after=STALE)
        assert done.reenqueued_stale == 1
        assert (await _get(context, run_id)).enqueue_count == 2
        queued = await context.redis.zrange(settings.queue_name, 0, -1)
        assert queued == [f"{run_id}:2".encode()]  # a fresh job id
        await run_worker_burst(settings)
        assert (await _get(context, run_id)).status == RunStatus.SUCCESS

    async def test_a_pass_whose_budget_is_spent_leaves_the_rest_to_the_next(
        self, context: AppContext, settings: Settings
    ) -> None:
        lost = [await _create(context) for _ in range(3)]
        await context.redis.delete(settings.queue_name, *(f"arq:job:{r}" for r in lost))
        for run_id in lost:
            await _age(context, run_id, updated_at=utcnow() - 2 * STALE)
        spent = await run_service.reconcile(context, stale_after=STALE, budget=dt.timedelta(0))
        assert (spent.reenqueued_stale, spent.requeued_expired) == (0, 0)
        assert [(await _get(context, r)).enqueue_count for r in lost] == [1, 1, 1]
        done = await run_service.reconcile(context, stale_after=STALE, budget=STALE)
        assert done.reenqueued_stale == 3
        assert [(await _get(context, r)).enqueue_count for r in lost] == [2, 2, 2]

    async def test_a_queued_run_still_known_to_arq_is_left_alone(self, context: AppContext) -> None:
        run_id = await _create(context)
        await _age(context, run_id, updated_at=utcnow() - 2 * STALE)
        done = await run_service.reconcile(context, stale_after=STALE)
        assert done.reenqueued_stale == 0
        assert (await _get(context, run_id)).enqueue_count == 1

    async def test_an_expired_lease_sends_the_run_back_to_the_queue(
        self, context: AppContext, settings: Settings
    ) -> None:
        run_id = await _create(context)
        assert await engine.claim(context, run_id, "dead-worker") == 1
        await _age(context, run_id, lease_expires_at=utcnow() - dt.timedelta(seconds=1))
        done = await run_service.reconcile(context, stale_after=STALE)
        assert done.requeued_expired == 1
        requeued = await _get(context, run_id)
        assert requeued.status == RunStatus.QUEUED
        assert requeued.lease_owner is None
        await run_worker_burst(settings)
        finished = await _get(context, run_id)
        assert finished.status == RunStatus.SUCCESS
        assert finished.lease_epoch == 2  # claimed by the dead worker, then by this one

    async def test_a_fenced_worker_cannot_finish_a_run_it_lost(self, context: AppContext) -> None:
        run_id = await _create(context)
        old_epoch = await engine.claim(context, run_id, "paused-worker")
        assert old_epoch == 1
        await _age(context, run_id, lease_expires_at=utcnow() - dt.timedelta(seconds=1))
        await run_service.reconcile(context, stale_after=STALE)
        assert await engine.claim(context, run_id, "new-worker") == 2
        with pytest.raises(engine.LeaseLost):
            await engine._finish(context, run_id, old_epoch, RunStatus.FAILURE)
        still = await _get(context, run_id)
        assert still.status == RunStatus.IN_PROGRESS
        assert still.lease_owner == "new-worker"


async def _finished(context: AppContext, run_id: str, within: float = 30) -> Run:
    """The run once it ended (failing after ``within`` seconds: a run nobody starts)."""
    deadline = time.monotonic() + within
    while (run := await _get(context, run_id)).status not in TERMINAL_STATUSES:
        assert time.monotonic() < deadline, f"run {run_id} still {run.status}"
        await asyncio.sleep(0.05)
    return run


@asynccontextmanager
async def _dead_jobs(context: AppContext, settings: Settings, count: int) -> AsyncIterator[None]:
    """What killed workers leave in the queue: ``count`` due jobs whose in-progress keys
    exist (arq keeps them until they expire, the longest job timeout: an hour by default).
    Queued a minute ago, so a job enqueued now is behind all of them."""
    ids = [f"{settings.redis_prefix}:dead:{n}" for n in range(count)]
    queued_at = timestamp_ms() - 60_000
    async with context.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.zadd(settings.queue_name, {job_id: queued_at})
            pipe.psetex(in_progress_key_prefix + job_id, 600_000, b"1")
        await pipe.execute()
    try:
        yield
    finally:
        await context.redis.delete(*(in_progress_key_prefix + job_id for job_id in ids))


@asynccontextmanager
async def _running(worker: WakeableWorker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.main())
    try:
        yield
    finally:
        await stop_worker(worker, task)


class TestQueueFullOfDeadJobs:
    """A worker reads past the jobs in progress at the head of the queue (arq alone reads
    its first ``queue_read_limit`` entries and would find nothing to start)."""

    async def test_the_reconciler_recovers_a_run_queued_behind_more_dead_jobs_than_one_read(
        self, context: AppContext, settings: Settings
    ) -> None:
        worker = create_worker(settings, handle_signals=False, poll_delay=0.02)
        assert isinstance(worker, WakeableWorker)
        run_id = await _create(context)
        # its worker was killed: the run's lease expired, its job is one of the dead ones
        assert await engine.claim(context, run_id, "dead-worker") == 1
        await _age(context, run_id, lease_expires_at=utcnow() - dt.timedelta(seconds=1))
        await context.redis.psetex(
            in_progress_key_prefix + run_service.job_id(run_id, 1), 600_000, b"1"
        )
        try:
            # the worker's reconcile cron job runs at start-up, queued behind the dead jobs
            async with _dead_jobs(context, settings, 2 * worker.queue_read_limit), _running(worker):
                run = await _finished(context, run_id)
        finally:
            await context.redis.delete(in_progress_key_prefix + run_service.job_id(run_id, 1))
        assert run.status == RunStatus.SUCCESS
        assert run.enqueue_count == 2  # requeued by the reconciler under a fresh job id

    async def test_a_poll_that_stops_at_its_scan_limit_resumes_there(
        self, context: AppContext, settings: Settings
    ) -> None:
        worker = create_worker(settings, handle_signals=False, poll_delay=0.02)
        assert isinstance(worker, WakeableWorker)
        worker.queue_scan_limit = worker.queue_read_limit  # one page per poll
        async with _dead_jobs(context, settings, 3 * worker.queue_read_limit):
            run_id = await _create(context)
            async with _running(worker):
                run = await _finished(context, run_id)
        assert run.status == RunStatus.SUCCESS
