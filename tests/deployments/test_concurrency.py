"""One active deployment per environment + service: 100 requests sent at once queue up
and run one at a time, in request order, with three workers competing for them."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import httpx
import pytest
from sqlalchemy import func, select

from app.core.context import AppContext
from app.core.settings import Settings
from app.deployments.models import DeploymentTarget, TargetState
from app.runs import service as run_service
from app.runs.models import TERMINAL_STATUSES, Run, RunKind, RunStatus
from tests.deployments.conftest import Env
from tests.factories import IssuedToken
from workers.main import create_worker, stop_worker

pytestmark = pytest.mark.slow
REQUESTS = 100


async def _sample(context: AppContext, stop: asyncio.Event, seen: list[tuple[int, int]]) -> None:
    """Every 50 ms: deployments in progress, and targets held active."""
    while not stop.is_set():
        async with context.sessionmaker() as session:
            running = await session.scalar(
                select(func.count()).where(
                    Run.kind == RunKind.DEPLOYMENT.value,
                    Run.status == RunStatus.IN_PROGRESS.value,
                )
            )
            active = await session.scalar(
                select(func.count()).where(DeploymentTarget.state == TargetState.ACTIVE.value)
            )
        seen.append((int(running or 0), int(active or 0)))
        await asyncio.sleep(0.05)


async def test_hundred_at_once_run_one_at_a_time_in_order(
    settings: Settings,
    context: AppContext,
    client: httpx.AsyncClient,
    deployer: IssuedToken,
    admin: IssuedToken,
    staging: Env,
) -> None:
    """Without smoke tests and with one version, so each deployment is quick; the order
    and the exclusion are what is checked."""
    await client.put(
        "/v1/environments/staging/services/backend",
        json={
            "driver": "process",
            "config": {
                "command": ["{python}", "-m", "app.embedded.sample_service"],
                "port": staging.ports["backend"],
            },
            "health_url": f"http://127.0.0.1:{staging.ports['backend']}/health",
        },
        headers=admin.headers,
    )
    workers = [create_worker(settings, handle_signals=False, poll_delay=0.05) for _ in range(3)]
    tasks = [asyncio.create_task(w.main()) for w in workers]
    stop, seen = asyncio.Event(), []
    sampler = asyncio.create_task(_sample(context, stop, seen))
    try:
        body = {"environment": "staging", "service": "backend", "version": "1.0.0"}
        responses = await asyncio.gather(
            *(
                client.post("/v1/deployments", json=body, headers=deployer.headers)
                for _ in range(REQUESTS)
            )
        )
        refused = [r.text for r in responses if r.status_code != 202]
        assert refused == []
        for _ in range(1500):  # at most 5 minutes
            async with context.sessionmaker() as session:
                runs = list(
                    await session.scalars(
                        select(Run)
                        .where(Run.kind == RunKind.DEPLOYMENT.value)
                        .order_by(Run.created_at, Run.id)
                    )
                )
            if all(r.status in TERMINAL_STATUSES for r in runs):
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await sampler
        for worker, task in zip(workers, tasks, strict=True):
            await stop_worker(worker, task)
    assert len(runs) == REQUESTS
    assert [r.status for r in runs] == [RunStatus.SUCCESS] * REQUESTS
    assert len(seen) > 20
    assert max(running for running, _ in seen) == 1  # sampled while they ran
    assert max(active for _, active in seen) <= 1
    # In request order: each started and ended after the one requested before it. (That
    # the next one starts only once the previous ended is the sampler's finding: the
    # timestamps are taken before each transaction waits for its locks.)
    for earlier, later in itertools.pairwise(runs):
        assert earlier.started_at is not None
        assert earlier.finished_at is not None
        assert later.started_at is not None
        assert later.finished_at is not None
        assert earlier.started_at < later.started_at
        assert earlier.finished_at < later.finished_at


async def test_the_reconciler_enqueues_only_the_first_deployment_in_line(
    settings: Settings,
    context: AppContext,
    client: httpx.AsyncClient,
    deployer: IssuedToken,
    staging: Env,
) -> None:
    """Deployments waiting behind an earlier one of their service are left queued by the
    reconciler (the earlier one enqueues the next as it ends); only the first in line,
    whose job Redis lost, is enqueued again. Enqueueing every waiting one each pass made
    as many jobs that found their run blocked, every few seconds, for the whole line."""
    ids = []
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        body = {"environment": "staging", "service": "backend", "version": version}
        response = await client.post("/v1/deployments", json=body, headers=deployer.headers)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    await context.redis.delete(settings.queue_name)  # Redis lost every job
    for run_id in ids:
        await context.redis.delete(f"arq:job:{run_id}")
    reconciled = await run_service.reconcile(context, stale_after=dt.timedelta(0))
    assert reconciled.reenqueued_stale == 1
    async with context.sessionmaker() as session:
        counts = dict(
            (await session.execute(select(Run.id, Run.enqueue_count).where(Run.id.in_(ids)))).all()
        )
    assert [counts[i] for i in ids] == [2, 1, 1]
    queued = await context.redis.zrange(settings.queue_name, 0, -1)
    assert queued == [f"{ids[0]}:2".encode()]
