"""The reconciler keeps runs alive when Redis or a worker lets them down."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from app.context import AppContext
from app.db import utcnow
from app.runs import engine
from app.runs import service as run_service
from app.runs.models import Run, RunKind, RunStatus
from app.runs.service import StepSpec
from app.settings import Settings
from tests.helpers import run_worker_burst

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
