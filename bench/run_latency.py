"""Latency from run creation to its first step, beside arq's own job latency.

Starts a private ``redis-server`` on a free port and a scratch database (PostgreSQL, or a
SQLite file in a temporary directory) built with the Alembic migrations, then, for each
poll delay of ``--poll-delays`` (default 0.5 s, arq's and Formula Ops' default, and
0.05 s):

- **arq baseline**: a bare arq worker (its own process; the job is a no-op that returns
  ``time.time()`` as it starts) gets ``--runs`` jobs enqueued at ``--rate`` per second;
  latency is enqueue -> job start.
- **Formula Ops**, once per value of ``--processes``: a real ``formula-ops worker
  --processes N`` gets ``--runs`` runs of one ``wait`` 0 s step, each created with
  ``create_run`` in its own unit of work at ``--rate`` per second; latency is the run's
  ``created_at`` -> its first ``step.started`` event's ``created_at``, split into
  segments (arq's enqueue and start times come from its job result).
- **CPU while loaded**, per job or run: the worker (all its processes), this process
  (it enqueues the jobs or creates the runs, as the API would), the PostgreSQL backends
  of the scratch database, the commands Redis processed, how busy the whole host was
  (% of all its cores) and how much of that none of these processes nor Redis used.
- **idle CPU** of the worker (all its processes) and of Redis over ``--idle-seconds``
  once the work is done, from ``utime + stime`` in ``/proc/<pid>/stat``.

Prints the figures, their ratio to arq's at the same poll delay and the goals (run
creation -> first step started: p50 <= 40 ms, p99 <= 100 ms at 50 runs/s with two worker
processes; worker CPU <= 10 ms per one-step run): ``--rate 50 --processes 2``. Nothing is
asserted. Workers, Redis and the scratch database are removed at the end, also on
error, Ctrl-C or SIGTERM.

    .venv/bin/python bench/run_latency.py [--runs 500] [--rate 100] [--processes 1 2 3]
        [--poll-delays 0.5 0.05] [--backend postgres|sqlite]

Environment: ``FORMULA_OPS_BENCH_PG_ADMIN_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) names a database to connect to for
``CREATE DATABASE`` / ``DROP DATABASE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psycopg
import redis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import result_key_prefix
from arq.jobs import deserialize_result
from arq.worker import Worker, func
from common import (
    CLOCK_TICKS,
    add_json_option,
    cpu_seconds,
    figure,
    free_port,
    host_ticks,
    log_tail,
    percentile,
    scratch_postgres,
    stop_process,
    total_cpu_seconds,
    write_json,
)
from pydantic import SecretStr
from sqlalchemy import select

from app.bootstrap import build_context
from app.core import migrate
from app.core.context import AppContext
from app.core.settings import Settings
from app.runs.models import TERMINAL_STATUSES, Run, RunEvent, RunKind
from app.runs.service import StepSpec, create_run

SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parent.parent
POLL_DELAYS = (0.5, 0.05)  # arq's and Formula Ops' default, and a tenth of it
GOAL_P50_MS = 40.0
GOAL_P99_MS = 100.0
GOAL_WORKER_CPU_MS = 10.0  # worker CPU per one-step run, while loaded
STEPS = [StepSpec("pause", "wait", {"seconds": 0})]
SEGMENTS = (
    ("insert", "created_at -> before commit"),
    ("commit", "before commit -> arq enqueue"),
    ("queue", "arq enqueue -> job start"),
    ("claim", "job start -> run.started"),
    ("first step", "run.started -> step.started"),
    ("total", "created_at -> step.started"),
)

T = TypeVar("T")


@dataclass
class Load:
    """CPU seconds spent while a phase was loaded, beside the worker's own."""

    bench: float = 0.0  # this process: enqueues the jobs or creates the runs
    postgres: float = math.nan  # the scratch database's backends (those alive at the end)
    host_busy: float = math.nan  # % of all the host's cores
    others: float = math.nan  # % of all the host's cores, used by none of the above,
    # the worker or redis-server (other work on a shared host)
    redis_commands: int = 0  # commands redis-server processed, from anyone


@dataclass
class Phase:
    """One measured phase: a worker at one poll delay under ``--runs`` jobs or runs."""

    label: str
    poll_delay: float
    latencies_ms: list[float]
    offered_per_s: float
    done_per_s: float
    processes: int = 1
    busy_cpu_ms: float = math.nan  # worker CPU time per job or run while under load
    load: Load | None = None  # the rest of the CPU spent while under load
    idle_cpu: float = math.nan  # % of one core, the worker (all its processes)
    idle_cpu_redis: float = math.nan  # % of one core, redis-server in the same window
    segments_ms: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the bare arq worker (run in its own process with --arq-worker) ----------------------


async def noop(ctx: dict[str, Any]) -> float:
    """The baseline job: does nothing but tell when it started."""
    return time.time()


def run_arq_worker(queue: str, port: int, poll_delay: float) -> None:
    Worker(
        functions=[func(noop, name="noop")],
        redis_settings=RedisSettings(host="127.0.0.1", port=port),
        queue_name=queue,
        poll_delay=poll_delay,
        health_check_key=f"{queue}:health-check",
    ).run()


# -- processes ------------------------------------------------------------------------------


@contextmanager
def running(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (its own session, output to ``log``), stopped on the way out."""
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - fixed argv built here
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process(process)


@contextmanager
def redis_server(directory: Path) -> Iterator[tuple[int, int]]:
    """A private redis-server on a free port, without persistence; yields (port, pid)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(directory)]
    with running(argv, directory / "redis.log") as process:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield port, process.pid


@contextmanager
def scratch_database(backend: str, directory: Path) -> Iterator[str]:
    """The database URL of a migrated scratch database, dropped (or deleted) afterwards."""
    if backend == "sqlite":
        url = f"sqlite:///{directory / 'bench.db'}"
        migrate.upgrade(Settings(database_url=SecretStr(url), state_dir=directory))
        yield url
        return
    with scratch_postgres(f"formula_ops_bench_latency_{os.getpid()}", directory) as url:
        yield url


def formula_ops_command(processes: int) -> list[str]:
    installed = Path(sys.executable).with_name("formula-ops")
    program = str(installed) if installed.exists() else "formula-ops"
    return [program, "worker", *(["--processes", str(processes)] if processes > 1 else [])]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a supervisor and its worker processes)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return [pid, *sorted(children)]


def postgres_backends(database_url: str | None) -> list[int]:
    """The server processes of the other connections to the scratch database."""
    if database_url is None or not database_url.startswith("postgresql"):
        return []
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(row[0]) for row in rows]


class LoadMeter:
    """Measures :class:`Load` between :meth:`start` and :meth:`stop`."""

    def __init__(self, redis_port: int, ours: list[int], database_url: str | None = None) -> None:
        self.redis = redis.Redis(host="127.0.0.1", port=redis_port)
        self.ours = ours  # the worker's processes and redis-server
        self.database_url = database_url

    def redis_commands(self) -> int:
        stats: dict[str, Any] = self.redis.info("stats")  # type: ignore[assignment]
        return int(stats["total_commands_processed"])

    def start(self) -> None:
        self._redis_commands = self.redis_commands()
        self._ours = total_cpu_seconds(self.ours)
        self._bench = time.process_time()
        self._host = host_ticks()
        self._backends = {pid: cpu_seconds(pid) for pid in postgres_backends(self.database_url)}

    def stop(self) -> Load:
        busy, total = host_ticks()
        load = Load(
            bench=time.process_time() - self._bench,
            host_busy=(busy - self._host[0]) / max(1, total - self._host[1]) * 100,
            redis_commands=self.redis_commands() - self._redis_commands,
        )
        if self.database_url is not None and self.database_url.startswith("postgresql"):
            load.postgres = sum(
                cpu_seconds(pid) - self._backends.get(pid, 0.0)
                for pid in postgres_backends(self.database_url)
            )
        ours = total_cpu_seconds(self.ours) - self._ours + load.bench
        ours += 0.0 if math.isnan(load.postgres) else load.postgres
        busy_seconds = (busy - self._host[0]) / CLOCK_TICKS
        load.others = (busy_seconds - ours) / max(1, total - self._host[1]) * CLOCK_TICKS * 100
        self.redis.close()
        return load


async def idle_cpu(groups: list[list[int]], seconds: float) -> list[float]:
    """Each group of processes' CPU use over ``seconds``, in % of one core."""
    before = [total_cpu_seconds(pids) for pids in groups]
    started = time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - started
    return [
        (total_cpu_seconds(pids) - used) / wall * 100
        for pids, used in zip(groups, before, strict=True)
    ]


def announced(log: Path) -> int:
    """How many worker processes logged their start in ``log``."""
    return log.read_text(errors="replace").count("Starting worker for")


async def wait_ready(
    client: ArqRedis,
    key: str,
    process: subprocess.Popen[bytes],
    log: Path,
    processes: int = 1,
) -> None:
    """Until the worker has polled once (it writes its health-check key then) and each
    of its ``processes`` has announced itself."""
    deadline = time.monotonic() + 60
    while not await client.exists(key) or (processes > 1 and announced(log) < processes):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the worker did not start (exit {process.poll()}):\n{log_tail(log)}"
            )
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # let start-up work (e.g. the reconciler's first run) pass


async def paced(
    n: int, rate: float, action: Callable[[int], Coroutine[Any, Any, T]]
) -> tuple[list[T], list[BaseException]]:
    """Start ``action(i)`` at ``i / rate`` seconds, without waiting for earlier ones
    (an open loop: a slow one does not hold back the next); the results and failures."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[T]] = []
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(action(i)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    return [r for r in results if not isinstance(r, BaseException)], failures


def failure_note(failures: list[BaseException], n: int, what: str) -> list[str]:
    if not failures:
        return []
    return [f"{len(failures)} of {n} {what} failed, first: {failures[0]!r}"[:300]]


def per_second(count: int, first: float, last: float) -> float:
    return (count - 1) / (last - first) if count > 1 and last > first else math.nan


# -- phases ---------------------------------------------------------------------------------


async def arq_phase(
    port: int, redis_pid: int, poll_delay: float, args: argparse.Namespace, directory: Path
) -> Phase:
    queue = f"bench:arq:{poll_delay}"
    argv = [sys.executable, str(SCRIPT), "--arq-worker", queue]
    argv += ["--redis-port", str(port), "--poll-delay", str(poll_delay)]
    log = directory / f"arq-worker-{poll_delay}.log"
    pool = await create_pool(RedisSettings(host="127.0.0.1", port=port), default_queue_name=queue)
    try:
        with running(argv, log) as worker:
            await wait_ready(pool, f"{queue}:health-check", worker, log)

            async def enqueue(i: int) -> tuple[str, float]:
                job_id, sent = f"noop-{poll_delay}-{i}", time.time()
                await pool.enqueue_job("noop", _job_id=job_id, _queue_name=queue)
                return job_id, sent

            meter = LoadMeter(port, [worker.pid, redis_pid])
            meter.start()
            cpu_before = cpu_seconds(worker.pid)
            jobs, failures = await paced(args.runs, args.rate, enqueue)
            deadline = time.monotonic() + max(120.0, 20 * args.runs / args.rate)
            results: dict[str, Any] = {}
            while len(results) < len(jobs) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                pending = [job_id for job_id, _ in jobs if job_id not in results]
                for job_id, raw in zip(
                    pending, await pool.mget([result_key_prefix + j for j in pending]), strict=True
                ):
                    if raw is not None:
                        results[job_id] = deserialize_result(raw)
            busy = (cpu_seconds(worker.pid) - cpu_before) * 1000 / max(1, len(results))
            load = meter.stop()
            cpu, cpu_redis = await idle_cpu([[worker.pid], [redis_pid]], args.idle_seconds)
    finally:
        await pool.aclose(close_connection_pool=True)
    if not jobs:
        raise RuntimeError(f"no job could be enqueued: {failures[0]!r}")
    sent_at = dict(jobs)
    first_sent = min(sent_at.values())
    finished = max((r.finish_time.timestamp() for r in results.values()), default=math.nan)
    phase = Phase(
        label="arq no-op job, enqueue -> start",
        poll_delay=poll_delay,
        latencies_ms=[(r.result - sent_at[j]) * 1000 for j, r in results.items()],
        offered_per_s=per_second(len(jobs), first_sent, max(sent_at.values())),
        done_per_s=len(results) / (finished - first_sent) if results else math.nan,
        busy_cpu_ms=busy,
        load=load,
        idle_cpu=cpu,
        idle_cpu_redis=cpu_redis,
    )
    phase.notes += failure_note(failures, args.runs, "enqueues")
    if len(results) < len(jobs):
        phase.notes.append(f"only {len(results)} of {len(jobs)} jobs ran")
    return phase


def worker_env(
    database_url: str, settings: Settings, directory: Path, poll_delay: float
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    assert settings.redis_url is not None
    return env | {
        "FORMULA_OPS_DATABASE_URL": database_url,
        "FORMULA_OPS_REDIS_URL": settings.redis_url.get_secret_value(),
        "FORMULA_OPS_QUEUE_NAME": settings.queue_name,
        "FORMULA_OPS_REDIS_PREFIX": settings.redis_prefix,
        "FORMULA_OPS_WORKER_POLL_DELAY_SECONDS": str(poll_delay),
        "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
        "FORMULA_OPS_STATE_DIR": str(directory),
    }


async def formula_ops_phase(
    database_url: str,
    port: int,
    redis_pid: int,
    poll_delay: float,
    processes: int,
    args: argparse.Namespace,
    directory: Path,
) -> Phase:
    name = f"{poll_delay}-{processes}"
    settings = Settings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(f"redis://127.0.0.1:{port}/0"),
        queue_name=f"bench:formula-ops:{name}",
        redis_prefix=f"bench-formula-ops-{name}",
        worker_poll_delay_seconds=poll_delay,
        state_dir=directory,
    )
    argv = formula_ops_command(processes)
    log = directory / f"formula-ops-worker-{name}.log"
    env = worker_env(database_url, settings, directory, poll_delay)
    requested_by = f"bench-{name}"
    context = build_context(settings)
    try:
        with running(argv, log, env) as worker:
            await wait_ready(
                context.redis, f"{settings.queue_name}:health-check", worker, log, processes
            )
            pids = process_tree(worker.pid)

            async def create(_: int) -> tuple[str, float, float]:
                async with context.unit_of_work() as uow:
                    run = await create_run(
                        uow,
                        context,
                        kind=RunKind.MAINTENANCE,
                        steps=STEPS,
                        requested_by=requested_by,
                    )
                    before_commit = time.time()
                return run.id, run.created_at.timestamp(), before_commit

            meter = LoadMeter(port, [*pids, redis_pid], database_url)
            meter.start()
            cpu_before = total_cpu_seconds(pids)
            created, failures = await paced(args.runs, args.rate, create)
            if not created:
                raise RuntimeError(f"no run could be created: {failures[0]!r}")
            deadline = time.monotonic() + max(120.0, 20 * args.runs / args.rate)
            while time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                if await finished_runs(context, requested_by) >= len(created):
                    break
            busy = (total_cpu_seconds(pids) - cpu_before) * 1000 / max(1, len(created))
            load = meter.stop()
            phase = await read_phase(context, requested_by, created, poll_delay)
            phase.processes = processes
            phase.busy_cpu_ms = busy
            phase.load = load
            phase.notes += failure_note(failures, args.runs, "creations")
            if worker.poll() is not None:
                phase.notes.append(f"the worker exited ({worker.returncode}):\n{log_tail(log)}")
            phase.idle_cpu, phase.idle_cpu_redis = await idle_cpu(
                [pids, [redis_pid]], args.idle_seconds
            )
    finally:
        await context.aclose()
    return phase


async def finished_runs(context: AppContext, requested_by: str) -> int:
    async with context.sessionmaker() as session:
        statuses = await session.scalars(select(Run.status).where(Run.requested_by == requested_by))
        return sum(status in TERMINAL_STATUSES for status in statuses)


async def read_phase(
    context: AppContext,
    requested_by: str,
    created: list[tuple[str, float, float]],
    poll_delay: float,
) -> Phase:
    """Latencies from the runs' events and the arq job results of their jobs."""
    async with context.sessionmaker() as session:
        runs = {
            run.id: run
            for run in await session.scalars(select(Run).where(Run.requested_by == requested_by))
        }
        events = (
            await session.execute(
                select(RunEvent.run_id, RunEvent.type, RunEvent.created_at)
                .join(Run, Run.id == RunEvent.run_id)
                .where(
                    Run.requested_by == requested_by,
                    RunEvent.type.in_(("run.started", "step.started")),
                )
                .order_by(RunEvent.run_id, RunEvent.seq)
            )
        ).all()
    first: dict[tuple[str, str], float] = {}
    for run_id, type_, at in events:
        first.setdefault((run_id, type_), at.timestamp())
    raw = await context.redis.mget([result_key_prefix + run_id for run_id, _, _ in created])
    jobs = {
        run_id: json.loads(value)
        for (run_id, _, _), value in zip(created, raw, strict=True)
        if value is not None
    }
    segments: dict[str, list[float]] = {name: [] for name, _ in SEGMENTS}
    for run_id, created_at, before_commit in created:
        step_started = first.get((run_id, "step.started"))
        if step_started is None:
            continue
        segments["total"].append((step_started - created_at) * 1000)
        run_started, job = first.get((run_id, "run.started")), jobs.get(run_id)
        if run_started is None or job is None:
            continue
        enqueued, job_started = job["et"] / 1000, job["st"] / 1000
        segments["insert"].append((before_commit - created_at) * 1000)
        segments["commit"].append((enqueued - before_commit) * 1000)
        segments["queue"].append((job_started - enqueued) * 1000)
        segments["claim"].append((run_started - job_started) * 1000)
        segments["first step"].append((step_started - run_started) * 1000)
    created_times = [created_at for _, created_at, _ in created]
    finished = [r.finished_at.timestamp() for r in runs.values() if r.finished_at is not None]
    phase = Phase(
        label="Formula Ops run, created_at -> step.started",
        poll_delay=poll_delay,
        latencies_ms=segments["total"],
        offered_per_s=per_second(len(created), min(created_times), max(created_times)),
        done_per_s=len(finished) / (max(finished) - min(created_times)) if finished else math.nan,
        segments_ms=segments,
    )
    statuses: dict[str, int] = {}
    for run in runs.values():
        statuses[run.status] = statuses.get(run.status, 0) + 1
    if statuses != {"success": len(created)}:
        phase.notes.append(f"run statuses {statuses} (expected {len(created)} success)")
    return phase


# -- report ---------------------------------------------------------------------------------


def p50_p99(values: list[float]) -> str:
    return f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f}"


def goal(phase: Phase) -> str:
    p50, p99 = percentile(phase.latencies_ms, 50), percentile(phase.latencies_ms, 99)
    met = {True: "met", False: "missed"}
    return (
        f"p50 <= {GOAL_P50_MS:.0f}: {met[p50 <= GOAL_P50_MS]}, "
        f"p99 <= {GOAL_P99_MS:.0f}: {met[p99 <= GOAL_P99_MS]}, "
        f"CPU {phase.busy_cpu_ms:.1f} <= {GOAL_WORKER_CPU_MS:.0f} ms/run: "
        f"{met[phase.busy_cpu_ms <= GOAL_WORKER_CPU_MS]}"
    )


def print_report(phases: list[Phase], header: str) -> None:
    print(header)
    baseline = {p.poll_delay: p for p in phases if p.label.startswith("arq")}
    title = (
        f"{'':<44} {'procs':>5} {'poll s':>6} {'p50 ms':>7} {'p99 ms':>7} {'p50 /arq':>8}"
        f" {'p99 /arq':>8} {'sent/s':>6} {'done/s':>6} {'idle CPU %':>10} {'redis %':>7}  goal"
    )
    print(title)
    print("-" * len(title))
    for phase in phases:
        p50, p99 = percentile(phase.latencies_ms, 50), percentile(phase.latencies_ms, 99)
        arq = baseline.get(phase.poll_delay)
        ratios = ""
        if arq is not None and arq is not phase:
            arq50, arq99 = percentile(arq.latencies_ms, 50), percentile(arq.latencies_ms, 99)
            ratios = f"{p50 / arq50:>7.1f}x {p99 / arq99:>7.1f}x"
        is_run = phase.label.startswith("Formula")
        print(
            f"{phase.label:<44} {phase.processes:>5} {phase.poll_delay:>6} {p50:>7.1f}"
            f" {p99:>7.1f} {ratios:>17} {phase.offered_per_s:>6.0f} {phase.done_per_s:>6.0f}"
            f" {phase.idle_cpu:>10.2f} {phase.idle_cpu_redis:>7.2f}"
            f"  {goal(phase) if is_run else ''}"
        )
    print(
        "procs: worker processes; sent/s: enqueues or creations per second; done/s: jobs or"
        " runs finished per second,\nfirst sent to last finished; idle CPU %: the worker (all"
        " its processes) and redis-server once done, % of one core;\n"
        f"goal: run creation -> first step started, p50 <= {GOAL_P50_MS:.0f} ms and"
        f" p99 <= {GOAL_P99_MS:.0f} ms at 50 runs/s with two worker processes, and worker CPU"
        f" (all its processes,\nwhile loaded) <= {GOAL_WORKER_CPU_MS:.0f} ms per one-step run"
    )
    print()
    title = (
        f"{'CPU while loaded, ms per job or run':<44} {'procs':>5} {'poll s':>6}"
        f" {'worker':>7} {'bench':>7} {'postgres':>8} {'redis cmds':>10} {'host busy %':>11}"
        f" {'others %':>8}"
    )
    print(title)
    print("-" * len(title))
    for phase in phases:
        load = phase.load or Load()
        count = max(1, len(phase.latencies_ms))
        print(
            f"{phase.label:<44} {phase.processes:>5} {phase.poll_delay:>6}"
            f" {phase.busy_cpu_ms:>7.2f} {load.bench * 1000 / count:>7.2f}"
            f" {load.postgres * 1000 / count:>8.2f} {load.redis_commands / count:>10.1f}"
            f" {load.host_busy:>11.0f} {load.others:>8.0f}"
        )
    print(
        "worker: all its processes, its polling included; bench: this process, which"
        " enqueues the jobs or creates the runs\n(as the API would) and polls for their end;"
        " postgres: the scratch database's backends; redis cmds: commands\nredis-server"
        " processed per job or run (the workers' polls and this process's enqueues and reads"
        " included); host busy %: all\nits cores, whatever ran on them, from the first job or"
        " run sent to the last finished; others %: the part of it\nused by none of these"
        " processes nor redis-server (other work on a shared host)"
    )
    runs = [p for p in phases if p.segments_ms]
    if runs:
        print()
        title = f"{'Formula Ops, p50 / p99 ms':<44}" + "".join(
            f" {f'{p.processes} proc, poll {p.poll_delay} s':>21}" for p in runs
        )
        print(title)
        print("-" * len(title))
        for name, span in SEGMENTS:
            cells = "".join(f" {p50_p99(p.segments_ms[name]):>21}" for p in runs)
            print(f"{name + ' (' + span + ')':<44}{cells}")
    for phase in phases:
        for note in phase.notes:
            print(f"note: {phase.label}, {phase.processes} proc, poll {phase.poll_delay} s: {note}")


def figures(phases: list[Phase], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The figures for ``--json``: each Formula Ops phase beside arq's at its poll delay."""
    arq = {p.poll_delay: p for p in phases if p.label.startswith("arq")}
    found = []
    for phase in phases:
        if not phase.label.startswith("Formula"):
            continue
        base = arq.get(phase.poll_delay)
        label = (
            f"run created -> first step, {phase.processes} worker proc, poll"
            f" {phase.poll_delay:g} s, {args.rate:g} runs/s"
        )
        for q, limit in ((50, GOAL_P50_MS), (99, GOAL_P99_MS)):
            value = percentile(phase.latencies_ms, q)
            found.append(
                figure(
                    f"{label}, p{q}",
                    value,
                    "ms",
                    baseline=percentile(base.latencies_ms, q) if base else None,
                    baseline_name="arq no-op enqueue -> start",
                    goal=f"<= {limit:g} ms",
                    met=value <= limit,
                )
            )
        found.append(
            figure(
                f"{label}, worker CPU per run",
                phase.busy_cpu_ms,
                "ms",
                baseline=base.busy_cpu_ms if base else None,
                baseline_name="arq no-op job",
                goal=f"<= {GOAL_WORKER_CPU_MS:g} ms",
                met=phase.busy_cpu_ms <= GOAL_WORKER_CPU_MS,
            )
        )
        found.append(
            figure(
                f"{label}, idle worker CPU",
                phase.idle_cpu,
                "% of a core",
                baseline=base.idle_cpu if base else None,
                baseline_name="idle arq worker",
            )
        )
    return found


# -- main -----------------------------------------------------------------------------------


def server_version(backend: str, database_url: str) -> str:
    if backend == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


async def measure(
    database_url: str, port: int, redis_pid: int, args: argparse.Namespace, directory: Path
) -> list[Phase]:
    phases = []
    for poll_delay in args.poll_delays:
        print(f"arq baseline, poll {poll_delay} s ...", file=sys.stderr)
        phases.append(await arq_phase(port, redis_pid, poll_delay, args, directory))
    for poll_delay in args.poll_delays:
        for processes in args.processes:
            print(
                f"Formula Ops worker, {processes} processes, poll {poll_delay} s ...",
                file=sys.stderr,
            )
            phases.append(
                await formula_ops_phase(
                    database_url, port, redis_pid, poll_delay, processes, args, directory
                )
            )
    return phases


def _terminate(signum: int, _frame: Any) -> NoReturn:
    """SIGINT / SIGTERM: unwind through every ``finally`` (a second signal is ignored,
    so it cannot cut the clean-up short)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="jobs or runs per phase")
    parser.add_argument("--rate", type=float, default=100.0, help="per second")
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="worker processes (`formula-ops worker --processes N`), one phase each",
    )
    parser.add_argument(
        "--poll-delays", type=float, nargs="+", default=list(POLL_DELAYS), metavar="S"
    )
    parser.add_argument("--arq-worker", metavar="QUEUE", help=argparse.SUPPRESS)
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--poll-delay", type=float, help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.arq_worker:
        run_arq_worker(args.arq_worker, args.redis_port, args.poll_delay)
        return
    if args.runs < 2 or args.rate <= 0 or args.idle_seconds <= 0:
        parser.error("--runs must be at least 2, --rate and --idle-seconds positive")
    if min(args.processes) < 1 or min(args.poll_delays) <= 0:
        parser.error("--processes must be at least 1, --poll-delays positive")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _terminate)
    with (
        tempfile.TemporaryDirectory(prefix="formula-ops-bench-") as tmp,
        scratch_database(args.backend, Path(tmp)) as database_url,
        redis_server(Path(tmp)) as (port, redis_pid),
    ):
        header = (
            f"{server_version(args.backend, database_url)}, {os.cpu_count()} CPUs; "
            f"{args.runs} jobs or runs per phase at {args.rate:g}/s, one `wait` 0 s step "
            f"per run; idle CPU over {args.idle_seconds:g} s; percentiles by nearest rank"
        )
        phases = asyncio.run(measure(database_url, port, redis_pid, args, Path(tmp)))
    print_report(phases, header)
    write_json(args.json, "run_latency", figures(phases, args), header=header)


if __name__ == "__main__":
    main()
