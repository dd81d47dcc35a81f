"""A run whose worker loses the database mid-run is handed back as soon as the database
answers again, not after its lease (real PostgreSQL; the fault is the database's own:
a table lock held from another connection, the worker's waiting backend terminated with
``pg_terminate_backend``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import psycopg
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.core.context import AppContext
from app.runs import service as run_service
from app.runs.models import Run, RunEvent, RunKind, Step
from app.runs.service import StepSpec
from tests.factories import issue_token
from tests.fault_injection.test_idempotency_faults import pg_dsn, until, waiting
from workers.main import create_worker, stop_worker

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)
LEASE_SECONDS = 3600  # far beyond this test: only a release can end the run in time


@pytest.fixture
async def long_lease_worker(context: AppContext) -> AsyncIterator[Callable[[], None]]:
    """Starts a worker (once called) whose leases outlast the test."""
    settings = context.settings.model_copy(update={"run_lease_seconds": LEASE_SECONDS})
    worker = create_worker(settings, handle_signals=False, poll_delay=0.02)
    tasks: list[asyncio.Task[None]] = []
    yield lambda: tasks.append(asyncio.create_task(worker.main()))
    for task in tasks:
        await stop_worker(worker, task)


async def _run(context: AppContext, run_id: str) -> Run:
    async with context.sessionmaker() as session:
        run = await session.get(Run, run_id)
        assert run is not None
        return run


async def test_a_run_interrupted_by_the_database_resumes_without_waiting_for_its_lease(
    client: httpx.AsyncClient, context: AppContext, long_lease_worker: Callable[[], None]
) -> None:
    operator = await issue_token(context, Role.OPERATOR)
    created = await client.post("/v1/health-checks", headers=operator.headers)
    assert created.status_code == 202, created.text
    run_id = created.json()["id"]
    async with await psycopg.AsyncConnection.connect(pg_dsn(context)) as locker:
        # Steps may be read (the claim) but not updated (a step starting): the worker
        # claims the run, then waits on this lock inside the run.
        await locker.execute("LOCK TABLE step IN EXCLUSIVE MODE")
        long_lease_worker()

        async def blocked() -> bool:
            return bool(await waiting(context, "relation"))

        await until(blocked, "the worker waits on the step table inside the run")
        assert (await _run(context, run_id)).status == "in_progress"
        async with await psycopg.AsyncConnection.connect(pg_dsn(context), autocommit=True) as admin:
            for pid in await waiting(context, "relation"):
                await admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        await locker.rollback()  # the lock goes; the database answers again

    async def ended() -> bool:
        return (await _run(context, run_id)).status in {"success", "failure", "error"}

    await until(ended, "the run ended long before its lease would expire")
    run = await _run(context, run_id)
    assert run.lease_epoch == 2, "claimed again after the release"
    async with context.sessionmaker() as session:
        reasons = [
            event.data.get("reason")
            for event in await session.scalars(
                select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.type == "run.requeued")
            )
        ]
    assert reasons == ["database_error"]


async def test_a_step_that_ended_before_the_database_failed_is_not_run_again(
    context: AppContext, long_lease_worker: Callable[[], None]
) -> None:
    """A step's end is written by the run's next transaction; when that transaction is
    the one the database failure interrupts, the release writes the end, so the resumed
    run goes on after the step instead of running it again."""
    async with context.unit_of_work() as uow:
        run = await run_service.create_run(
            uow,
            context,
            kind=RunKind.PLAYBOOK,
            steps=[
                StepSpec(name="first", action="wait", params={"seconds": 1.5}),
                StepSpec(name="second", action="wait", params={"seconds": 0}),
            ],
            requested_by="faults",
        )
    run_id = run.id

    async def first_running() -> bool:
        async with context.sessionmaker() as session:
            first = await session.scalar(
                select(Step).where(Step.run_id == run_id, Step.position == 0)
            )
            return first is not None and first.status == "in_progress"

    long_lease_worker()
    await until(first_running, "the first step runs")
    async with await psycopg.AsyncConnection.connect(pg_dsn(context)) as locker:
        # The first step (1.5 s) ends under this lock: the transaction that carries its
        # end and starts the second step waits here.
        await locker.execute("LOCK TABLE step IN EXCLUSIVE MODE")

        async def blocked() -> bool:
            return bool(await waiting(context, "relation"))

        await until(blocked, "the worker waits to write the first step's end")
        async with await psycopg.AsyncConnection.connect(pg_dsn(context), autocommit=True) as admin:
            for pid in await waiting(context, "relation"):
                await admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        await locker.rollback()

    async def ended() -> bool:
        return (await _run(context, run_id)).status in {"success", "failure", "error"}

    await until(ended, "the run ended long before its lease would expire")
    assert (await _run(context, run_id)).status == "success"
    async with context.sessionmaker() as session:
        steps = list(
            await session.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.position))
        )
        finished = [
            event.data.get("name")
            for event in await session.scalars(
                select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.type == "step.finished")
            )
        ]
    assert [(s.status, s.attempts) for s in steps] == [("success", 1), ("success", 1)]
    assert finished.count("first") == 1, finished
