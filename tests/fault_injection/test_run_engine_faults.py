"""The run engine under faults, with real processes: ``formula-ops worker`` subprocesses
killed with SIGKILL in the middle of runs, Redis flushed under queued runs, a worker
paused past its lease while another takes its run over, and duplicate jobs of one run;
then two deaths at exact moments (made exact by holding a database lock the worker
waits for): after arq handed out the job but before the claim, and after an interrupted
step was recorded but before the run ended.

PostgreSQL (a fresh database for this module) and a private ``redis-server`` started
here, so FLUSHALL harms nobody. Side effects are counted with ``shell`` steps that append
a marker line to a file; the database rows and run events are checked against them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import psycopg
import pytest
import pytest_asyncio
import redis
from arq.constants import in_progress_key_prefix, job_key_prefix
from pydantic import SecretStr
from sqlalchemy import select, text, update

from app.bootstrap import build_context
from app.core import migrate
from app.core.context import AppContext
from app.core.db import utcnow
from app.core.queue import JobName
from app.core.settings import Settings
from app.runs import service as run_service
from app.runs.models import (
    TERMINAL_STATUSES,
    Run,
    RunEvent,
    RunKind,
    RunStatus,
    Step,
    StepStatus,
)
from app.runs.service import StepSpec
from tests.helpers import create_pg_database, drop_pg_database, free_port, in_thread

pytestmark = pytest.mark.slow

FORMULA_OPS = Path(sys.executable).parent / "formula-ops"
LEASE_SECONDS = 5
RECONCILE_EVERY_SECONDS = 1
STALE_AFTER_SECONDS = 2
POLL_SECONDS = 0.2
INTERRUPTED = "/problems/interrupted"
SEED = int(os.environ.get("FAULTS_SEED", random.randrange(2**32)))

T = TypeVar("T")


# -- servers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free port, without persistence; killed at teardown."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = (workdir / "redis.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (workdir / "redis.log").read_text(errors="replace")
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {port} did not answer PING within 10 s")
            time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.kill()
        process.wait(10)
        log.close()


@pytest.fixture(scope="module")
def database_url(redis_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this module, migrated to head."""
    name = f"formula_ops_faults_{os.getpid()}"
    url = create_pg_database(name)
    try:
        in_thread(
            migrate.upgrade, Settings(database_url=SecretStr(url), redis_url=SecretStr(redis_url))
        )
        yield url
    finally:
        drop_pg_database(name)


# -- workers and runs -----------------------------------------------------------------


class WorkerProcess:
    """One ``formula-ops worker`` subprocess, in its own process group, logging to a file."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"worker-{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(FORMULA_OPS), "worker"],
            cwd=workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def state(self) -> str:
        """The kernel's state letter of the process (``T`` when stopped)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return "gone"
        return stat.rpartition(")")[2].split()[0]

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean-up code of the worker runs."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log.close()


class Harness:
    """A queue of its own on the module's database and Redis; starts and kills workers."""

    def __init__(self, settings: Settings, context: AppContext, workdir: Path, token: str):
        self.settings = settings
        self.context = context
        self.workdir = workdir
        self.token = token
        self.effects = workdir / "effects.log"
        self.effects.touch()
        self.shell_pids = workdir / "shell-pids"
        self.shell_pids.touch()
        self.workers: list[WorkerProcess] = []
        self.run_ids: list[str] = []

    # workers

    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
        assert self.settings.database_url is not None
        assert self.settings.redis_url is not None
        env |= {
            "FORMULA_OPS_DATABASE_URL": self.settings.database_url.get_secret_value(),
            "FORMULA_OPS_REDIS_URL": self.settings.redis_url.get_secret_value(),
            "FORMULA_OPS_QUEUE_NAME": self.settings.queue_name,
            "FORMULA_OPS_REDIS_PREFIX": self.settings.redis_prefix,
            "FORMULA_OPS_STATE_DIR": str(self.workdir / "state"),
            "FORMULA_OPS_RUN_LEASE_SECONDS": str(LEASE_SECONDS),
            "FORMULA_OPS_RECONCILE_EVERY_SECONDS": str(RECONCILE_EVERY_SECONDS),
            "FORMULA_OPS_RECONCILE_STALE_AFTER_SECONDS": str(STALE_AFTER_SECONDS),
            "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
        }
        return env

    def start_worker(self, name: str | None = None) -> WorkerProcess:
        worker = WorkerProcess(name or str(len(self.workers)), self.worker_env(), self.workdir)
        self.workers.append(worker)
        return worker

    async def wait_started(self, worker: WorkerProcess, within: float = 30) -> None:
        """Until arq announced the worker (its start-up hook runs right after)."""
        await self.wait_log(worker, "Starting worker for", within=within)

    async def wait_log(self, worker: WorkerProcess, text: str, *, within: float) -> str:
        deadline = time.monotonic() + within
        while True:
            output = worker.output()
            if text in output:
                return output
            if time.monotonic() > deadline:
                pytest.fail(
                    f"worker {worker.name} (pid {worker.pid}) did not log {text!r} within "
                    f"{within} s; its log:\n{output[-4000:]}"
                )
            if not worker.alive():
                pytest.fail(f"worker {worker.name} exited; its log:\n{output[-4000:]}")
            await asyncio.sleep(POLL_SECONDS)

    def pause(self, worker: WorkerProcess) -> None:
        """SIGSTOP the worker at a moment it holds no open database transaction (a paused
        transaction would hold the run's row lock, and the takeover would wait for it)."""
        for _ in range(50):
            os.kill(worker.pid, signal.SIGSTOP)
            deadline = time.monotonic() + 5
            while worker.state() != "T":
                assert time.monotonic() < deadline, f"worker {worker.name} did not stop"
                time.sleep(0.01)
            time.sleep(0.2)  # a statement in flight finishes on the server
            if not self._busy_connections():
                return
            os.kill(worker.pid, signal.SIGCONT)
            time.sleep(0.05)
        pytest.fail(f"worker {worker.name} always had a transaction open when paused")

    def _busy_connections(self) -> int:
        """Connections to this database not idle (the test process holds none open)."""
        return self.other_connections()[0]

    def other_connections(self) -> tuple[int, int]:
        """Other connections to this database: (not idle, waiting for a lock)."""
        assert self.settings.database_url is not None
        with psycopg.connect(self.settings.database_url.get_secret_value()) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE state <> 'idle'), "
                "count(*) FILTER (WHERE wait_event_type = 'Lock') "
                "FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def stop_all(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.kill()
        # shell steps run in sessions of their own: end those still running (pids they
        # recorded, checked against this harness's token so no other process is touched)
        for line in self.shell_pids.read_text().split():
            with contextlib.suppress(OSError, ValueError):
                pid = int(line)
                if self.token in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                    os.killpg(pid, signal.SIGKILL)

    # runs

    def shell_step(
        self, name: str, script: str, *, idempotent: bool, timeout_seconds: float = 60
    ) -> StepSpec:
        """A ``shell`` step running ``script``; ``$EFFECTS`` is the side-effect file."""
        argv = ["sh", "-c", f': {self.token}; echo $$ >> "$SHELL_PIDS"; {script}']
        return StepSpec(
            name,
            "shell",
            {
                "argv": argv,
                "env": {"EFFECTS": str(self.effects), "SHELL_PIDS": str(self.shell_pids)},
            },
            idempotent=idempotent,
            timeout_seconds=timeout_seconds,
        )

    def effect_step(
        self, name: str, marker: str, *, idempotent: bool, sleep: float = 0.3
    ) -> StepSpec:
        """Appends ``marker`` (the side effect) first, then takes ``sleep`` seconds."""
        return self.shell_step(
            name, f'echo {marker} >> "$EFFECTS"; sleep {sleep}', idempotent=idempotent
        )

    def side_effects(self) -> Counter[str]:
        return Counter(self.effects.read_text().split())

    async def create_run(self, steps: list[StepSpec]) -> str:
        async with self.context.unit_of_work() as uow:
            run = await run_service.create_run(
                uow, self.context, kind=RunKind.PLAYBOOK, steps=steps, requested_by="faults"
            )
        self.run_ids.append(run.id)
        return run.id

    async def runs(self, run_ids: Iterable[str]) -> dict[str, Run]:
        async with self.context.sessionmaker() as session:
            rows = await session.scalars(select(Run).where(Run.id.in_(list(run_ids))))
            return {run.id: run for run in rows}

    async def steps(self, run_ids: Iterable[str]) -> dict[str, list[Step]]:
        ids = list(run_ids)
        found: dict[str, list[Step]] = {run_id: [] for run_id in ids}
        async with self.context.sessionmaker() as session:
            for step in await session.scalars(
                select(Step).where(Step.run_id.in_(ids)).order_by(Step.run_id, Step.position)
            ):
                found[step.run_id].append(step)
        return found

    async def events(self, run_ids: Iterable[str]) -> dict[str, list[RunEvent]]:
        ids = list(run_ids)
        found: dict[str, list[RunEvent]] = {run_id: [] for run_id in ids}
        async with self.context.sessionmaker() as session:
            for event in await session.scalars(
                select(RunEvent)
                .where(RunEvent.run_id.in_(ids))
                .order_by(RunEvent.run_id, RunEvent.seq)
            ):
                found[event.run_id].append(event)
        return found

    async def eventually(
        self, check: Callable[[], Awaitable[T | None]], *, within: float, waiting_for: str
    ) -> T:
        """``check()`` every 0.2 s until it returns something truthy, or fail."""
        deadline = time.monotonic() + within
        while True:
            value = await check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(
                    f"gave up after {within} s waiting for {waiting_for}\n"
                    f"{await self.describe(self.run_ids)}"
                )
            await asyncio.sleep(POLL_SECONDS)

    async def wait_terminal(self, run_ids: Iterable[str], *, within: float) -> dict[str, Run]:
        ids = list(run_ids)

        async def all_terminal() -> dict[str, Run] | None:
            runs = await self.runs(ids)
            done = all(run.status in TERMINAL_STATUSES for run in runs.values())
            return runs if done and len(runs) == len(ids) else None

        return await self.eventually(
            all_terminal, within=within, waiting_for=f"{len(ids)} run(s) to end"
        )

    async def describe(self, run_ids: Iterable[str]) -> str:
        """The state of the runs that have not ended (for failure messages)."""
        ids = list(run_ids)
        runs, steps = await self.runs(ids), await self.steps(ids)
        lines = [f"seed {SEED}; {len(self.workers)} worker(s) started"]
        now = utcnow()
        for run_id, run in runs.items():
            if run.status in TERMINAL_STATUSES:
                continue
            arq_id = run_service.job_id(run_id, run.enqueue_count)
            job = await self.context.redis.exists(job_key_prefix + arq_id)
            running = await self.context.redis.exists(in_progress_key_prefix + arq_id)
            expires = (
                f"{(run.lease_expires_at - now).total_seconds():.1f} s"
                if run.lease_expires_at
                else "-"
            )
            lines.append(
                f"run {run_id}: {run.status}, epoch {run.lease_epoch}, enqueued "
                f"{run.enqueue_count}x (arq job {arq_id}: key={job} in_progress={running}), "
                f"lease expires in {expires}, updated {run.updated_at:%H:%M:%S.%f}, steps "
                + " ".join(f"{s.position}:{s.status}/{s.attempts}" for s in steps[run_id])
            )
        alive = [w for w in self.workers if w.alive()]
        if alive:
            lines.append(f"log of worker {alive[-1].name}:\n{alive[-1].output()[-3000:]}")
        return "\n".join(lines)

    async def retire_leftovers(self) -> None:
        """Runs of this test that did not end are cancelled, so that the reconciler of a
        later test in this module does not pick them up."""
        if not self.run_ids:
            return
        async with self.context.unit_of_work() as uow:
            await uow.session.execute(
                update(Run)
                .where(
                    Run.id.in_(self.run_ids),
                    Run.status.in_([RunStatus.QUEUED.value, RunStatus.IN_PROGRESS.value]),
                )
                .values(status=RunStatus.CANCELLED.value, lease_expires_at=None)
            )


@pytest_asyncio.fixture
async def harness(database_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    token = f"faults-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        state_dir=tmp_path / "state",
        database_url=SecretStr(database_url),
        redis_url=SecretStr(redis_url),
        queue_name=f"{token}:queue",
        redis_prefix=token,
        run_lease_seconds=LEASE_SECONDS,
        reconcile_every_seconds=RECONCILE_EVERY_SECONDS,
        reconcile_stale_after_seconds=STALE_AFTER_SECONDS,
    )
    context = build_context(settings)
    instance = Harness(settings, context, tmp_path, token)
    try:
        yield instance
    finally:
        instance.stop_all()
        try:
            await instance.retire_leftovers()
        finally:
            await context.aclose()


def events_of(events: list[RunEvent], kind: str) -> list[RunEvent]:
    return [event for event in events if event.type == kind]


# -- 1. SIGKILL in the middle of runs ---------------------------------------------------


def step_done_problems(step: Step, effects: int, retried: set[int], where: str) -> list[str]:
    """What is wrong with a step that should have succeeded, given its side effects:
    an unsafe step exactly once; an idempotent one at least once, at most once per
    attempt, and more than once only if it was retried after its worker stopped."""
    if step.status != StepStatus.SUCCESS:
        return [f"{where}: step {step.position} is {step.status}"]
    if not step.idempotent and effects != 1:
        return [f"{where}: unsafe step {step.position} had {effects} side effects"]
    if step.idempotent and not 1 <= effects <= step.attempts:
        return [f"{where}: step {step.position}: {effects} effects, {step.attempts} attempts"]
    if effects > 1 and step.position not in retried:
        return [f"{where}: step {step.position} repeated without being retried"]
    return []


async def test_workers_killed_mid_run_lose_no_run_and_repeat_no_unsafe_step(
    harness: Harness,
) -> None:
    """20 times: a worker starts, runs steps for a random 0.3-1.5 s, and is SIGKILLed.
    Then one worker finishes everything (the reconciler requeues expired leases).

    Twelve runs of five 0.3 s steps are there from the start; before each worker starts,
    one more run of three short unsafe steps is queued, which that worker may finish or
    be killed in the middle of."""
    plans: dict[str, list[bool]] = {}  # tag -> idempotent flag of each step
    plans |= {f"unsafe{n}": [False] * 5 for n in range(6)}
    plans |= {f"safe{n}": [True] * 5 for n in range(4)}
    plans |= {
        "mixed0": [False, True, False, True, False],
        "mixed1": [True, False, True, False, True],
    }
    tags: dict[str, str] = {}  # run id -> tag
    for tag, flags in plans.items():
        steps = [
            harness.effect_step(f"s{i}", f"{tag}-s{i}", idempotent=flag)
            for i, flag in enumerate(flags)
        ]
        tags[await harness.create_run(steps)] = tag

    rng = random.Random(SEED)
    for kill in range(20):
        tag = f"quick{kill}"
        plans[tag] = [False] * 3
        steps = [
            harness.effect_step(f"s{i}", f"{tag}-s{i}", idempotent=False, sleep=0.1)
            for i in range(3)
        ]
        tags[await harness.create_run(steps)] = tag
        worker = harness.start_worker()
        await harness.wait_started(worker)
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        worker.kill()

    harness.start_worker("final")
    runs = await harness.wait_terminal(tags, within=60)
    steps, events = await harness.steps(tags), await harness.events(tags)
    effects = harness.side_effects()

    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    for run_id, tag in tags.items():
        run, run_steps, run_events = runs[run_id], steps[run_id], events[run_id]
        where = f"run {tag} ({run_id}, {run.status}, {run.failure_type})"
        outcomes[f"{run.status} {run.failure_type or ''}".strip()] += 1
        retried = {event.data["position"] for event in events_of(run_events, "step.retrying")}
        if len(events_of(run_events, "run.finished")) != 1 or run_events[-1].type != "run.finished":
            problems.append(f"{where}: not exactly one run.finished, as the last event")
        if run.lease_owner is not None or run.lease_expires_at is not None:
            problems.append(f"{where}: ended but still leased")

        if run.status == RunStatus.SUCCESS:
            for step in run_steps:
                problems += step_done_problems(step, effects[f"{tag}-{step.name}"], retried, where)
        elif run.status == RunStatus.FAILURE and run.failure_type == INTERRUPTED:
            failed = [s for s in run_steps if s.status == StepStatus.FAILURE]
            if len(failed) != 1 or failed[0].idempotent:
                listed = ", ".join(f"{s.position}: {s.error}" for s in failed)
                problems.append(f"{where}: interrupted, but the failed steps are {listed}")
                continue
            stop = failed[0]
            if not (stop.error or "").startswith("interrupted"):
                problems.append(f"{where}: step {stop.position} failed with {stop.error!r}")
            if effects[f"{tag}-{stop.name}"] > 1 or stop.attempts != 1:
                problems.append(f"{where}: the interrupted step ran more than once")
            for step in run_steps[: stop.position]:
                problems += step_done_problems(step, effects[f"{tag}-{step.name}"], retried, where)
            for step in run_steps[stop.position + 1 :]:
                if step.status != StepStatus.PENDING or effects[f"{tag}-{step.name}"]:
                    problems.append(f"{where}: step {step.position} after the interruption ran")
        else:
            seen = " ".join(
                f"{s.position}:{s.status}/{s.attempts}/{effects[f'{tag}-{s.name}']}"
                for s in run_steps
            )
            problems.append(f"{where}: unexpected; steps (status/attempts/effects) {seen}")
        if all(plans[tag]) and run.status != RunStatus.SUCCESS:
            problems.append(f"{where}: only idempotent steps, yet it did not succeed")
        for step in run_steps:
            if not step.idempotent and (step.attempts > 1 or effects[f"{tag}-{step.name}"] > 1):
                problems.append(f"{where}: unsafe step {step.position} started twice")

    print(f"seed {SEED}: {dict(outcomes)}")
    assert not problems, f"seed {SEED}, outcomes {dict(outcomes)}:\n" + "\n".join(problems)
    # the kills did land in the middle of unsafe steps, and unsafe runs did get through
    assert outcomes[f"{RunStatus.FAILURE.value} {INTERRUPTED}"] >= 1, outcomes
    unsafe_done = [
        t for i, t in tags.items() if runs[i].status == RunStatus.SUCCESS and not all(plans[t])
    ]
    assert unsafe_done, outcomes


# -- 2. FLUSHALL under queued runs ------------------------------------------------------


async def test_runs_queued_before_redis_was_flushed_all_complete(harness: Harness) -> None:
    run_ids = [
        await harness.create_run([StepSpec("pause", "wait", {"seconds": 0})]) for _ in range(50)
    ]
    redis_client = harness.context.redis
    assert await redis_client.zcard(harness.settings.queue_name) == 50
    await redis_client.flushall()
    assert await redis_client.zcard(harness.settings.queue_name) == 0

    harness.start_worker()
    runs = await harness.wait_terminal(run_ids, within=60)

    assert {run.status for run in runs.values()} == {RunStatus.SUCCESS.value}
    # each one enqueued again under a fresh job id, and claimed once
    assert min(run.enqueue_count for run in runs.values()) >= 2
    assert {run.lease_epoch for run in runs.values()} == {1}


# -- 3. a paused worker past its lease --------------------------------------------------


async def test_a_paused_worker_commits_nothing_after_its_run_was_taken_over(
    harness: Harness,
) -> None:
    """A runs a long idempotent step and is SIGSTOPped; its lease expires, B takes the run
    over and finishes it; A, resumed, finds its lease lost and writes nothing."""
    steps = [
        # the side effect happens when the step ends, i.e. while its worker is paused
        harness.shell_step(
            "slow",
            'sleep 8; echo slow-$PPID >> "$EFFECTS"; echo slow-by-$PPID',
            idempotent=True,
        ),
        harness.shell_step(
            "after", 'echo after-$PPID >> "$EFFECTS"; echo after-by-$PPID', idempotent=False
        ),
    ]
    run_id = await harness.create_run(steps)
    worker_a = harness.start_worker("A")

    async def slow_step_running() -> bool:
        first = (await harness.steps([run_id]))[run_id][0]
        return first.status == StepStatus.IN_PROGRESS

    await harness.eventually(slow_step_running, within=30, waiting_for="A to start step 0")
    harness.pause(worker_a)

    async def lease_expired() -> bool:
        run = (await harness.runs([run_id]))[run_id]
        assert run.status == RunStatus.IN_PROGRESS, run.status
        assert run.lease_expires_at is not None
        return run.lease_expires_at < utcnow()

    await harness.eventually(
        lease_expired, within=LEASE_SECONDS + 5, waiting_for="A's lease to expire"
    )
    worker_b = harness.start_worker("B")
    run = (await harness.wait_terminal([run_id], within=60))[run_id]
    assert run.status == RunStatus.SUCCESS, run.failure_detail
    assert worker_a.state() == "T", "A ran while it should have been paused"

    async def snapshot() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        current = (await harness.runs([run_id]))[run_id]
        columns = ("status", "lease_epoch", "lease_owner", "finished_at", "updated_at", "result")
        return (
            {column: getattr(current, column) for column in columns},
            [
                {c: getattr(s, c) for c in ("status", "attempts", "output", "finished_at")}
                for s in (await harness.steps([run_id]))[run_id]
            ],
            [
                {"seq": e.seq, "type": e.type, "data": e.data}
                for e in (await harness.events([run_id]))[run_id]
            ],
        )

    finished_by_b = await snapshot()
    os.kill(worker_a.pid, signal.SIGCONT)
    await harness.wait_log(worker_a, "lease lost", within=15)
    await asyncio.sleep(2)  # anything A would still write, it has written by now
    assert worker_a.alive(), worker_a.output()[-3000:]
    assert await snapshot() == finished_by_b, "A wrote after its run was taken over"

    run = (await harness.runs([run_id]))[run_id]
    assert run.lease_epoch == 2
    assert run.lease_owner is None
    slow, after = (await harness.steps([run_id]))[run_id]
    assert (slow.status, slow.attempts, slow.output) == (
        StepStatus.SUCCESS,
        2,
        f"slow-by-{worker_b.pid}\n",
    )
    assert (after.status, after.attempts, after.output) == (
        StepStatus.SUCCESS,
        1,
        f"after-by-{worker_b.pid}\n",
    )

    events = (await harness.events([run_id]))[run_id]
    types = [event.type for event in events]
    assert types.count("run.finished") == 1
    assert types[-1] == "run.finished", types
    started = events_of(events, "run.started")
    assert [event.data["attempt"] for event in started] == [1, 2]
    assert f":{worker_a.pid}:" in started[0].data["worker"]
    assert f":{worker_b.pid}:" in started[1].data["worker"]
    # between A's claim and the takeover A only started step 0; every step.finished and
    # the run.finished come after B's claim
    takeover = started[1].seq
    assert [e.type for e in events if started[0].seq < e.seq < takeover] == [
        "step.started",
        "run.requeued",
    ]
    assert all(e.seq > takeover for e in events_of(events, "step.finished"))
    assert [e.data["position"] for e in events_of(events, "step.retrying")] == [0]

    # A's step did finish its side effect while A was paused; A then committed nothing
    assert harness.side_effects() == Counter(
        {f"slow-{worker_a.pid}": 1, f"slow-{worker_b.pid}": 1, f"after-{worker_b.pid}": 1}
    )
    assert "lease lost" not in worker_b.output()
    assert "Traceback" not in worker_a.output(), worker_a.output()[-3000:]


# -- 4. duplicate jobs of one run -------------------------------------------------------


async def test_duplicate_jobs_of_one_run_on_three_workers_run_each_step_once(
    harness: Harness,
) -> None:
    steps = [harness.effect_step(f"s{i}", f"dup-s{i}", idempotent=False) for i in range(5)]
    run_id = await harness.create_run(steps)
    enqueued = await asyncio.gather(
        *(
            harness.context.queue.enqueue(JobName.EXECUTE_RUN, run_id, job_id=f"{run_id}:{n}")
            for n in range(1, 11)
        )
    )
    assert all(enqueued)
    assert await harness.context.redis.zcard(harness.settings.queue_name) == 11

    workers = [harness.start_worker(f"w{n}") for n in range(3)]
    run = (await harness.wait_terminal([run_id], within=60))[run_id]

    assert run.status == RunStatus.SUCCESS, run.failure_detail
    assert run.lease_epoch == 1
    assert harness.side_effects() == Counter({f"dup-s{i}": 1 for i in range(5)})
    assert all(step.attempts == 1 for step in (await harness.steps([run_id]))[run_id])
    events = (await harness.events([run_id]))[run_id]
    assert len(events_of(events, "run.started")) == 1

    # every one of the 10 duplicates was executed, and found nothing to do
    idle = f"run {run_id} is not queued; nothing to do"

    async def duplicates_done() -> int:
        count = sum(worker.output().count(idle) for worker in workers)
        return count if count >= 10 else 0

    assert await harness.eventually(duplicates_done, within=20, waiting_for="10 duplicates") == 10


# -- a worker killed between taking the job and claiming the run -----------------------


async def test_a_worker_killed_after_taking_the_job_before_claiming_loses_no_run(
    harness: Harness,
) -> None:
    """arq marks the job in progress, then the worker dies before its claim commits: the
    run is still queued, and arq keeps the job marked in progress for the whole job
    timeout (an hour). The reconciler must not take that mark for a live job: it enqueues
    the run again under a fresh job id once it is stale."""
    run_id = await harness.create_run([StepSpec("pause", "wait", {"seconds": 0})])

    async def claim_waiting() -> int:
        return harness.other_connections()[1]

    # hold the run's row lock, so that the worker's claim waits for it; kill it then
    async with harness.context.unit_of_work() as uow:
        await uow.session.execute(select(Run.id).where(Run.id == run_id).with_for_update())
        doomed = harness.start_worker("doomed")
        await harness.eventually(claim_waiting, within=30, waiting_for="the claim to wait")
        doomed.kill()
    assert await harness.context.redis.exists(in_progress_key_prefix + run_id)

    harness.start_worker("next")
    run = (await harness.wait_terminal([run_id], within=STALE_AFTER_SECONDS + 10))[run_id]
    assert run.status == RunStatus.SUCCESS


# -- a worker killed after settling an interrupted step, before ending the run ----------


async def test_a_run_whose_interrupted_step_was_settled_runs_no_further_step(
    harness: Harness,
) -> None:
    """A dies in the middle of unsafe step 0. B takes the run over and records step 0 as
    interrupted, then dies before it ends the run. C must end the run as interrupted;
    it must not take the failed step for a finished one and run step 1."""
    steps = [
        harness.shell_step("first", 'echo first >> "$EFFECTS"; sleep 20', idempotent=False),
        harness.effect_step("second", "second", idempotent=False, sleep=0),
    ]
    run_id = await harness.create_run(steps)
    worker_a = harness.start_worker("A")

    async def first_step_running() -> bool:
        first = (await harness.steps([run_id]))[run_id][0]
        return first.status == StepStatus.IN_PROGRESS and harness.side_effects()["first"] == 1

    await harness.eventually(first_step_running, within=30, waiting_for="A to run step 0")
    worker_a.kill()

    async def settled_and_ending() -> bool:
        first = (await harness.steps([run_id]))[run_id][0]
        return first.status == StepStatus.FAILURE and harness.other_connections()[1] > 0

    # ending a run writes an outbox event: hold that table, so B's last transaction
    # waits (after the one that settled step 0 committed), and kill B then
    async with harness.context.unit_of_work() as uow:
        await uow.session.execute(text("LOCK TABLE outbox_event IN SHARE MODE"))
        worker_b = harness.start_worker("B")
        await harness.eventually(
            settled_and_ending, within=30, waiting_for="B to settle step 0 and end the run"
        )
        worker_b.kill()

    harness.start_worker("C")
    run = (await harness.wait_terminal([run_id], within=30))[run_id]
    first, second = (await harness.steps([run_id]))[run_id]
    effects = harness.side_effects()
    assert (second.status, second.attempts, effects["second"]) == (StepStatus.PENDING, 0, 0)
    assert (first.status, first.attempts, effects["first"]) == (StepStatus.FAILURE, 1, 1)
    assert (run.status, run.failure_type) == (RunStatus.FAILURE, INTERRUPTED), run.failure_detail
