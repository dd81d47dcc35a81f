"""Acceptance: two ``formula-ops worker`` processes on one PostgreSQL and Redis fire a
schedule every minute for five real minutes — five slots at five consecutive minute
boundaries, exactly five runs, every one finished."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import select

from app.auth.principal import Principal
from app.auth.roles import Role
from app.bootstrap import build_context
from app.core import migrate
from app.core.context import AppContext
from app.core.settings import Settings
from app.runs.models import TERMINAL_STATUSES, Run, RunStatus
from app.schedules import service
from app.schedules.models import Schedule, ScheduleSlot
from app.schedules.schemas import ScheduleChange, ScheduleCreate
from tests.helpers import REDIS_URL, RUNBOOKS, create_pg_database, drop_pg_database, in_thread

pytestmark = [pytest.mark.slow, pytest.mark.early]

FORMULA_OPS = Path(sys.executable).parent / "formula-ops"
SLOTS = 5
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture(scope="module")
def schedule_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A database of its own: nothing else fires or runs in it."""
    name = f"formula_ops_schedules_{os.getpid()}"
    url = create_pg_database(name)
    prefix = f"formula-ops-test-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("state"),
        database_url=SecretStr(url),
        redis_url=SecretStr(REDIS_URL),
        queue_name=f"{prefix}:queue",
        redis_prefix=prefix,
        runbooks=RUNBOOKS,
    )
    in_thread(migrate.upgrade, settings)
    yield settings
    drop_pg_database(name)


@pytest_asyncio.fixture
async def schedule_context(schedule_settings: Settings) -> AsyncIterator[AppContext]:
    context = build_context(schedule_settings)
    yield context
    keys = [k async for k in context.redis.scan_iter(match=f"{schedule_settings.redis_prefix}*")]
    if keys:
        await context.redis.delete(*keys)
    await context.aclose()


class Worker:
    """One ``formula-ops worker`` process in its own process group, logging to a file."""

    def __init__(self, settings: Settings, workdir: Path, index: int) -> None:
        assert settings.database_url is not None
        assert settings.redis_url is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
        env |= {
            "FORMULA_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
            "FORMULA_OPS_REDIS_URL": settings.redis_url.get_secret_value(),
            "FORMULA_OPS_QUEUE_NAME": settings.queue_name,
            "FORMULA_OPS_REDIS_PREFIX": settings.redis_prefix,
            "FORMULA_OPS_STATE_DIR": str(settings.state_dir),
            "FORMULA_OPS_RUNBOOKS__CATALOG_DIRS": json.dumps(
                [str(path) for path in settings.runbooks.catalog_dirs]
            ),
            "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
            "FORMULA_OPS_BACKUPS__SCHEDULE_ENABLED": "false",
            "FORMULA_OPS_WORKER_POLL_DELAY_SECONDS": "0.2",
            "PYTHONFAULTHANDLER": "1",
        }
        self.log_path = workdir / f"worker-{index}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(FORMULA_OPS), "worker"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> None:
        assert self.process.poll() is None, f"a worker exited:\n{self.output()[-4000:]}"

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def workers(schedule_settings: Settings, tmp_path: Path) -> Iterator[list[Worker]]:
    started = [Worker(schedule_settings, tmp_path, i) for i in range(2)]
    yield started
    for worker in started:
        worker.stop()


async def wait_started(workers: list[Worker], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not all("Starting worker for" in w.output() for w in workers):
        for worker in workers:
            worker.alive()
        assert time.monotonic() < deadline, [w.output()[-2000:] for w in workers]
        await asyncio.sleep(0.2)


async def fired_slots(context: AppContext, schedule_id: str) -> list[ScheduleSlot]:
    async with context.sessionmaker() as session:
        return list(
            await session.scalars(
                select(ScheduleSlot)
                .where(ScheduleSlot.schedule_id == schedule_id)
                .order_by(ScheduleSlot.slot_at)
            )
        )


@pytest.mark.timeout(660)
async def test_two_workers_fire_a_minute_schedule_once_a_minute(
    workers: list[Worker], schedule_context: AppContext
) -> None:
    await wait_started(workers)
    admin = Principal.system("tests", Role.ADMIN)
    async with schedule_context.unit_of_work() as uow:
        schedule = await service.create(
            uow,
            schedule_context,
            admin,
            ScheduleCreate(name="every-minute", runbook="test-schedule-noop", cron="* * * * *"),
        )
    first = schedule.next_run_at
    assert first is not None
    expected = [first + n * MINUTE for n in range(SLOTS)]

    # Until the fifth slot has fired (each is fired within a tick of the job, 10 s) ...
    deadline = time.monotonic() + (expected[-1] - dt.datetime.now(dt.UTC)).total_seconds() + 60
    while len(found := await fired_slots(schedule_context, schedule.id)) < SLOTS:
        for worker in workers:
            worker.alive()
        assert time.monotonic() < deadline, (found, [w.output()[-3000:] for w in workers])
        await asyncio.sleep(1)
    # ... then no more: disabled well before the sixth slot.
    async with schedule_context.unit_of_work() as uow:
        await service.update_schedule(
            uow, schedule_context, admin, schedule.id, ScheduleChange(enabled=False), None
        )
    assert dt.datetime.now(dt.UTC) < expected[-1] + MINUTE

    # A few more ticks of both workers: nothing fires twice, nothing is missed.
    await asyncio.sleep(15)
    slots = await fired_slots(schedule_context, schedule.id)
    assert [(s.slot_at, s.status) for s in slots] == [(at, "fired") for at in expected], slots
    run_ids = [s.run_id for s in slots]
    assert None not in run_ids
    assert len(set(run_ids)) == SLOTS

    deadline = time.monotonic() + 60
    while True:
        async with schedule_context.sessionmaker() as session:
            scheduled = list(
                await session.scalars(
                    select(Run).where(Run.requested_by == "schedule:every-minute")
                )
            )
        if all(run.status in TERMINAL_STATUSES for run in scheduled):
            break
        assert time.monotonic() < deadline, [(r.id, r.status) for r in scheduled]
        await asyncio.sleep(0.5)
    assert sorted(run.id for run in scheduled) == sorted(run_ids)  # exactly five runs
    assert {run.status for run in scheduled} == {RunStatus.SUCCESS.value}
    # Each ran after its slot, not in a burst at the end (within a minute: one CI run
    # under load saw the first slot fired 50 s late, the job being due every 10 s).
    for run, slot_at in zip(sorted(scheduled, key=lambda r: r.created_at), expected, strict=True):
        assert dt.timedelta(0) <= run.created_at - slot_at < MINUTE
    async with schedule_context.sessionmaker() as session:
        row = await session.get(Schedule, schedule.id)
    assert row is not None
    assert row.last_slot_at == expected[-1]
    assert row.last_run_id == run_ids[-1]
    for worker in workers:
        assert "Traceback" not in worker.output(), worker.output()[-4000:]
