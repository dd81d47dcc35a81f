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
from app.runs.models import Run, RunEvent
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
