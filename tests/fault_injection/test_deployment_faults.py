"""A deployment whose worker is killed (SIGKILL, the whole process group) in the middle
of its deploy step: another worker takes it over after the lease and it ends — resumed
(the deploy step is idempotent) or rolled back — never stuck, never half-deployed
without a record. Real ``formula-ops worker`` processes, PostgreSQL, Redis, and the
sample web service run by the ``process`` driver."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import select

from app.auth.principal import Principal
from app.bootstrap import build_context
from app.core import migrate
from app.core.context import AppContext
from app.core.settings import Settings
from app.deployments import service as deployment_service
from app.deployments.models import Deployment, DeploymentTarget, TargetState
from app.deployments.schemas import DeploymentCreate
from app.drivers.base import DRIVERS, DriverSettings
from app.environments import service as environment_service
from app.environments.models import Service
from app.environments.schemas import EnvironmentIn, service_schemas
from app.runs.models import TERMINAL_STATUSES, Run, RunStatus, Step, StepStatus
from tests.fault_injection.test_run_engine_faults import SEED, WorkerProcess
from tests.helpers import (
    REDIS_URL,
    create_pg_database,
    drop_pg_database,
    free_port,
    in_thread,
    stop_services,
)

pytestmark = pytest.mark.slow
KILLS = 3
ACTOR = Principal.system("faults")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    name = f"formula_ops_deploy_faults_{os.getpid()}"
    url = create_pg_database(name)
    prefix = f"formula-ops-deploy-faults-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=SecretStr(url),
        redis_url=SecretStr(REDIS_URL),
        queue_name=f"{prefix}:queue",
        redis_prefix=prefix,
        state_dir=tmp_path_factory.mktemp("state"),
        run_lease_seconds=5,
        reconcile_every_seconds=1,
        reconcile_stale_after_seconds=2,
    )
    try:
        in_thread(migrate.upgrade, settings)
        yield settings
    finally:
        drop_pg_database(name)


@pytest_asyncio.fixture(scope="module")
async def context(settings: Settings) -> AsyncIterator[AppContext]:
    ctx = build_context(settings)
    yield ctx
    await ctx.aclose()


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    assert settings.database_url is not None
    env |= {
        "FORMULA_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
        "FORMULA_OPS_REDIS_URL": REDIS_URL,
        "FORMULA_OPS_QUEUE_NAME": settings.queue_name,
        "FORMULA_OPS_REDIS_PREFIX": settings.redis_prefix,
        "FORMULA_OPS_STATE_DIR": str(settings.state_dir),
        "FORMULA_OPS_RUN_LEASE_SECONDS": str(settings.run_lease_seconds),
        "FORMULA_OPS_RECONCILE_EVERY_SECONDS": "1",
        "FORMULA_OPS_RECONCILE_STALE_AFTER_SECONDS": "2",
        "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
    }
    return env


async def served(port: int) -> str | None:
    async with httpx.AsyncClient(trust_env=False) as http:
        try:
            return str((await http.get(f"http://127.0.0.1:{port}/", timeout=2)).json()["version"])
        except httpx.HTTPError:
            return None


async def wait_for(check: object, within: float, what: str) -> object:
    deadline = time.monotonic() + within
    while True:
        value = await check()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {within} s waiting for {what} (seed {SEED})")
        await asyncio.sleep(0.1)


async def test_kill_during_deploy_step_ends_resumed_or_rolled_back(
    settings: Settings, context: AppContext, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    port = free_port()
    async with context.unit_of_work() as uow:
        await environment_service.create_environment(uow, ACTOR, "prod", EnvironmentIn())
        await environment_service.put_service(
            uow,
            ACTOR,
            "prod",
            "api",
            service_schemas(context.registry[DRIVERS]).adapter.validate_python(
                {
                    "driver": "process",
                    "config": {
                        "command": ["{python}", "-m", "app.embedded.sample_service"],
                        "port": port,
                    },
                    "health_url": f"http://127.0.0.1:{port}/health",
                    "health_timeout_seconds": 15,
                    "settle_seconds": 2,  # the deploy step lasts: a window to kill in
                }
            ),
            None,
            drivers=context.registry[DRIVERS],
            settings=DriverSettings.from_settings(context.settings),
        )
    workers: list[WorkerProcess] = []

    def start_worker() -> WorkerProcess:
        worker = WorkerProcess(str(len(workers)), worker_env(settings), tmp_path)
        workers.append(worker)
        return worker

    async def deploy(version: str) -> str:
        async with context.unit_of_work() as uow:
            created = await deployment_service.create(
                uow,
                context,
                ACTOR,
                DeploymentCreate(environment="prod", service="api", version=version),
            )
        return created.run.id

    async def finished(run_id: str) -> Run | None:
        async with context.sessionmaker() as session:
            run = await session.get(Run, run_id, populate_existing=True)
        return run if run is not None and run.status in TERMINAL_STATUSES else None

    try:
        worker = start_worker()
        first = await deploy("1.0.0")
        run = await wait_for(lambda: finished(first), 60, "the first deployment")
        assert isinstance(run, Run)
        assert run.status == RunStatus.SUCCESS, run.failure_detail
        outcomes = []
        for attempt in range(1, KILLS + 1):
            version = f"1.{attempt}.0"
            before = await served(port)
            run_id = await deploy(version)

            async def deploying(run_id: str = run_id) -> bool:
                async with context.sessionmaker() as session:
                    status = await session.scalar(
                        select(Step.status).where(Step.run_id == run_id, Step.action == "deploy")
                    )
                return status == StepStatus.IN_PROGRESS

            await wait_for(deploying, 60, f"the deploy step of {version}")
            await asyncio.sleep(rng.uniform(0, 1.5))
            worker.kill()
            worker = start_worker()
            run = await wait_for(lambda run_id=run_id: finished(run_id), 90, f"{version} to end")
            assert isinstance(run, Run)
            async with context.sessionmaker() as session:
                target = await session.scalar(
                    select(DeploymentTarget).where(DeploymentTarget.deployment_id == run_id)
                )
                service = await session.scalar(select(Service).where(Service.name == "api"))
                deployment = await session.get(Deployment, run_id)
                steps = list(
                    await session.scalars(
                        select(Step).where(Step.run_id == run_id).order_by(Step.position)
                    )
                )
            assert target is not None
            assert service is not None
            assert deployment is not None
            assert target.touched  # recorded before the driver changed anything
            assert target.state == TargetState.DONE
            assert deployment.evidence is not None
            now_serving = await served(port)
            deploy_step = next(s for s in steps if s.action == "deploy")
            if run.status == RunStatus.SUCCESS:
                assert deploy_step.attempts >= 2  # resumed by the second worker
                assert now_serving == version
                assert service.current_version == version
            else:
                assert run.status == RunStatus.ROLLED_BACK, (run.status, run.failure_detail)
                assert now_serving == before
                assert service.current_version == before
            outcomes.append(run.status)
        assert len(outcomes) == KILLS
    finally:
        for w in workers:
            if w.alive():
                w.kill()
        await stop_services(context)
        keys = [k async for k in context.redis.scan_iter(match=f"{settings.redis_prefix}*")]
        if keys:
            await context.redis.delete(*keys)
