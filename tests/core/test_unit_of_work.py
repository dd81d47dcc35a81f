"""One transaction per unit of work; jobs leave for Redis only after the commit.

A real arq worker (burst mode) executes what was enqueued, on both backends.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from app.bootstrap import build_context
from app.core.context import AppContext
from app.core.queue import JobName
from app.core.settings import Settings
from app.outbox.models import OutboxEvent
from app.runs import engine
from app.runs import service as run_service
from app.runs.models import Run, RunKind, RunStatus
from app.runs.service import StepSpec
from tests.helpers import free_port, run_worker_burst


async def count(context: AppContext, model: type[Run] | type[OutboxEvent]) -> int:
    async with context.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def queued_jobs(context: AppContext) -> int:
    return int(await context.redis.zcard(context.settings.queue_name))


STEPS = [StepSpec("pause", "wait", {"seconds": 0})]


class Boom(Exception):
    pass


class TestUnitOfWork:
    async def test_commit_writes_row_and_event_then_enqueues(self, context: AppContext) -> None:
        async with context.unit_of_work() as uow:
            run = await run_service.create_run(
                uow,
                context,
                kind=RunKind.HEALTH_CHECK,
                steps=STEPS,
                params={"a": 1},
                requested_by="t",
            )
            # inside the transaction: nothing has left for Redis yet
            assert await queued_jobs(context) == 0
        assert await count(context, Run) == 1
        assert await count(context, OutboxEvent) == 1
        assert await queued_jobs(context) == 1
        job = await context.redis.zrange(context.settings.queue_name, 0, -1)
        assert job == [run.id.encode()]  # job id = run id

    async def test_rollback_writes_nothing_and_enqueues_nothing(self, context: AppContext) -> None:
        with pytest.raises(Boom):
            async with context.unit_of_work() as uow:
                await run_service.create_run(
                    uow, context, kind=RunKind.HEALTH_CHECK, steps=STEPS, requested_by="t"
                )
                raise Boom
        assert await count(context, Run) == 0
        assert await count(context, OutboxEvent) == 0
        assert await queued_jobs(context) == 0

    async def test_failed_enqueue_keeps_the_committed_run(
        self, settings: Settings, caplog: pytest.LogCaptureFixture
    ) -> None:
        broken = settings.model_copy(
            update={"redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0")}
        )
        context = build_context(broken)
        try:
            for _ in range(3):
                async with context.unit_of_work() as uow:
                    run = await run_service.create_run(
                        uow, context, kind=RunKind.HEALTH_CHECK, steps=STEPS, requested_by="t"
                    )
                async with context.sessionmaker() as session:
                    stored = await session.get(Run, run.id)
                assert stored is not None
                assert stored.status == RunStatus.QUEUED
        finally:
            await context.aclose()
        # said once for the outage, not once per run, and not as a failure with a traceback
        assert caplog.text.count("queue: Redis unreachable") == 1, caplog.text
        assert "the reconciler enqueues them" in caplog.text
        assert "Traceback" not in caplog.text

    async def test_units_of_work_do_not_nest(self, context: AppContext) -> None:
        uow = context.unit_of_work()
        async with uow:
            with pytest.raises(RuntimeError):
                await uow.__aenter__()


class TestWorkerExecutesQueuedRuns:
    async def test_worker_claims_and_runs_the_steps(
        self, context: AppContext, settings: Settings
    ) -> None:
        async with context.unit_of_work() as uow:
            run = await run_service.create_run(
                uow, context, kind=RunKind.PLAYBOOK, steps=STEPS, requested_by="t"
            )
        await run_worker_burst(settings)
        async with context.sessionmaker() as session:
            done = await session.get_one(Run, run.id)
            events = (await session.scalars(select(OutboxEvent.type))).all()
        assert done.status == RunStatus.SUCCESS
        assert done.failure_type is None
        assert done.lease_epoch == 1
        assert done.started_at is not None
        assert done.finished_at is not None
        assert sorted(events) == ["run.queued", "runbook.succeeded"]

    async def test_duplicate_job_finds_nothing_to_do(
        self, context: AppContext, settings: Settings
    ) -> None:
        async with context.unit_of_work() as uow:
            run = await run_service.create_run(
                uow, context, kind=RunKind.PLAYBOOK, steps=STEPS, requested_by="t"
            )
        await run_worker_burst(settings)
        # the same run enqueued again under a fresh id, as a reconciler would
        assert await context.queue.enqueue(JobName.EXECUTE_RUN, run.id, job_id=f"{run.id}:2")
        await run_worker_burst(settings)
        async with context.sessionmaker() as session:
            done = await session.get_one(Run, run.id)
            events = await session.scalar(select(func.count()).select_from(OutboxEvent))
        assert done.lease_epoch == 1  # claimed once
        assert events == 2

    async def test_arq_refuses_a_job_id_it_still_knows(self, context: AppContext) -> None:
        async with context.unit_of_work() as uow:
            run = await run_service.create_run(
                uow, context, kind=RunKind.PLAYBOOK, steps=STEPS, requested_by="t"
            )
        assert not await context.queue.enqueue(JobName.EXECUTE_RUN, run.id, job_id=run.id)

    async def test_claim_is_exclusive(self, context: AppContext) -> None:
        async with context.unit_of_work() as uow:
            run = await run_service.create_run(
                uow, context, kind=RunKind.PLAYBOOK, steps=STEPS, requested_by="t"
            )
        first = await engine.claim(context, run.id, "a")
        second = await engine.claim(context, run.id, "b")
        assert first == 1
        assert second is None
        async with context.sessionmaker() as session:
            claimed = await session.get_one(Run, run.id)
        assert claimed.lease_owner == "a"

    async def test_jobs_are_json_on_the_queue(self, context: AppContext) -> None:
        async with context.unit_of_work() as uow:
            run = await run_service.create_run(
                uow, context, kind=RunKind.PLAYBOOK, steps=STEPS, requested_by="t"
            )
        raw = await context.redis.get(f"arq:job:{run.id}")
        assert raw is not None
        assert raw.startswith(b"{")
        assert b'"f":"execute_run"' in raw
