"""``formula-ops worker --processes 2`` as a real subprocess on the test PostgreSQL and
Redis: both worker processes execute runs, SIGTERM to the supervisor stops them all, a
worker process that dies is started again, and a crash loop makes the supervisor stop
the others and exit 1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.core.context import AppContext
from app.core.settings import Settings
from app.embedded.redis import process_alive
from app.runs import service as run_service
from app.runs.models import TERMINAL_STATUSES, Run, RunEvent, RunKind, RunStatus
from app.runs.service import StepSpec
from tests.helpers import create_pg_database, drop_pg_database

pytestmark = pytest.mark.slow

FORMULA_OPS = Path(sys.executable).parent / "formula-ops"
RUNS = 8
# Each child takes one job at a time and each run lasts a while, so one child cannot
# finish them all before the other takes some.
STEP_SECONDS = 0.5


class Supervisor:
    """``formula-ops worker --processes N`` in its own process group, logging to a file."""

    def __init__(self, settings: Settings, workdir: Path, processes: int, **extra_env: str) -> None:
        assert settings.database_url is not None
        assert settings.redis_url is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
        env |= {
            "FORMULA_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
            "FORMULA_OPS_REDIS_URL": settings.redis_url.get_secret_value(),
            "FORMULA_OPS_QUEUE_NAME": settings.queue_name,
            "FORMULA_OPS_REDIS_PREFIX": settings.redis_prefix,
            "FORMULA_OPS_STATE_DIR": str(settings.state_dir),
            "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
            "FORMULA_OPS_WORKER_MAX_JOBS": "1",
            "FORMULA_OPS_WORKER_POLL_DELAY_SECONDS": "0.1",
            "PYTHONFAULTHANDLER": "1",
            **extra_env,
        }
        self.processes = processes
        self.log_path = workdir / "worker.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(FORMULA_OPS), "worker", "--processes", str(processes)],
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

    def children(self) -> set[int]:
        """The live processes whose parent is the supervisor."""
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError):
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[1]) == self.process.pid and fields[0] != "Z":
                    found.add(int(stat.parent.name))
        return found

    async def wait_started(self, within: float = 60) -> set[int]:
        """Until every child has started its worker; the children's pids."""
        deadline = time.monotonic() + within
        while True:
            assert self.process.poll() is None, f"the supervisor exited:\n{self.output()}"
            children = self.children()
            started = self.output().count("Starting worker for")
            if len(children) == self.processes and started >= self.processes:
                return children
            assert time.monotonic() < deadline, (
                f"{len(children)} children, {started} started within {within} s:\n"
                f"{self.output()[-4000:]}"
            )
            await asyncio.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` to the supervisor only; its exit code."""
        self.process.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the supervisor did not exit within {timeout} s:\n{self.output()[-4000:]}"
            ) from None

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()


@pytest.fixture
def supervisor(worker_settings: Settings, tmp_path: Path) -> Iterator[Supervisor]:
    started = Supervisor(worker_settings, tmp_path, processes=2)
    yield started
    started.kill_all()


async def create_runs(context: AppContext, n: int) -> list[str]:
    run_ids = []
    for _ in range(n):
        async with context.unit_of_work() as uow:
            run = await run_service.create_run(
                uow,
                context,
                kind=RunKind.MAINTENANCE,
                steps=[StepSpec("pause", "wait", {"seconds": STEP_SECONDS})],
                requested_by="worker-processes",
            )
        run_ids.append(run.id)
    return run_ids


async def wait_finished(
    context: AppContext, run_ids: list[str], supervisor: Supervisor, within: float = 120
) -> dict[str, str]:
    deadline = time.monotonic() + within
    while True:
        async with context.sessionmaker() as session:
            statuses = dict(
                (await session.execute(select(Run.id, Run.status).where(Run.id.in_(run_ids)))).all()
            )
        if all(status in TERMINAL_STATUSES for status in statuses.values()):
            return {str(k): str(v) for k, v in statuses.items()}
        assert supervisor.process.poll() is None, f"the supervisor exited:\n{supervisor.output()}"
        assert time.monotonic() < deadline, (
            f"runs not finished within {within} s: {statuses}\n{supervisor.output()[-4000:]}"
        )
        await asyncio.sleep(0.2)


async def claiming_pids(context: AppContext, run_ids: list[str]) -> dict[str, int]:
    """Per run, the pid in the worker id of its ``run.started`` event
    (``<host>:<pid>:<suffix>``, see ``workers.state.startup``)."""
    async with context.sessionmaker() as session:
        events = await session.scalars(
            select(RunEvent).where(RunEvent.run_id.in_(run_ids), RunEvent.type == "run.started")
        )
        return {event.run_id: int(str(event.data["worker"]).split(":")[1]) for event in events}


async def test_two_worker_processes_share_the_runs_and_stop_on_sigterm(
    supervisor: Supervisor, app_context: AppContext
) -> None:
    children = await supervisor.wait_started()
    assert len(children) == 2

    run_ids = await create_runs(app_context, RUNS)
    statuses = await wait_finished(app_context, run_ids, supervisor)
    assert set(statuses.values()) == {RunStatus.SUCCESS.value}, statuses

    pids = await claiming_pids(app_context, run_ids)
    assert set(pids) == set(run_ids)
    assert set(pids.values()) == children, (pids, children)

    assert supervisor.stop(signal.SIGTERM) == 0, supervisor.output()[-4000:]
    assert not [pid for pid in children if process_alive(pid)]
    output = supervisor.output()
    assert "Traceback" not in output, output[-4000:]
    assert "execute_run(" not in output, "arq's per-job lines are logged"


async def test_a_worker_process_that_dies_is_started_again(
    supervisor: Supervisor, app_context: AppContext
) -> None:
    children = await supervisor.wait_started()
    victim, other = sorted(children)
    os.kill(victim, signal.SIGKILL)

    deadline = time.monotonic() + 60
    while True:
        assert supervisor.process.poll() is None, supervisor.output()
        now = supervisor.children()
        if (
            len(now) == 2
            and victim not in now
            and supervisor.output().count("Starting worker for") >= 3
        ):
            break
        assert time.monotonic() < deadline, supervisor.output()[-4000:]
        await asyncio.sleep(0.1)
    assert other in now  # the other one went on
    output = supervisor.output()
    assert f"worker process {victim} exited unexpectedly (signal SIGKILL); starting it again" in (
        output
    ), output

    run_ids = await create_runs(app_context, 2)  # the new one executes runs
    statuses = await wait_finished(app_context, run_ids, supervisor)
    assert set(statuses.values()) == {RunStatus.SUCCESS.value}, statuses
    assert supervisor.stop(signal.SIGTERM) == 0, supervisor.output()[-4000:]
    assert not [pid for pid in now if process_alive(pid)]


async def test_a_crash_loop_ends_the_supervisor_with_exit_1(
    worker_settings: Settings, tmp_path: Path
) -> None:
    """Workers that cannot start (here: a database without the schema) are started
    again until more than FORMULA_OPS_WORKER_MAX_RESTARTS died within the window."""
    name = f"formula_ops_empty_{os.getpid()}"
    empty = worker_settings.model_copy(update={"database_url": SecretStr(create_pg_database(name))})
    started = Supervisor(
        empty,
        tmp_path,
        processes=2,
        FORMULA_OPS_WORKER_MAX_RESTARTS="2",
        FORMULA_OPS_WORKER_RESTART_WINDOW_SECONDS="60",
    )
    try:
        assert started.wait(60) == 1
        output = started.output()
        assert output.count("starting it again") == 2, output
        assert "a crash loop; stopping the others" in output, output
        assert not started.children()
    finally:
        started.kill_all()
        drop_pg_database(name)


async def test_worker_processes_stop_when_the_supervisor_is_killed(
    supervisor: Supervisor,
) -> None:
    children = await supervisor.wait_started()
    supervisor.process.kill()  # SIGKILL: the supervisor forwards nothing
    supervisor.wait()
    deadline = time.monotonic() + 30
    while any(process_alive(pid) for pid in children):
        assert time.monotonic() < deadline, f"orphaned workers:\n{supervisor.output()[-4000:]}"
        await asyncio.sleep(0.1)
