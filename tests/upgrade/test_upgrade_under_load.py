"""Upgrade under load, as the README's "Upgrading" section prescribes: the schema is
migrated to this code's head first (expand only), the previous release's API and worker
processes keep serving on it beside this release's, and then each old process is
replaced by a new one — an API process drained first (no request sent to it any more,
its requests in flight answered, SIGTERM, graceful exit), a worker by SIGTERM (the run it
executes goes back to the queue). A steady 50 requests/s (health checks and deployments
created with an Idempotency-Key, replays of those keys, run and list reads) goes round
robin to the live API processes the whole time.

Passes with no failed request (every answer the expected status; no connection error,
no 5xx), no lost run (every run terminal at the end) and no ERROR line in any process's
log. Time bound: 75-105 s wall on 2 cores at a load average of 10-14 (eight processes
start); the generator then reaches 25-40 of the 50 requests/s it aims at.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import random
import secrets
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from app.bootstrap import build_context
from app.core import migrate
from app.core.context import AppContext
from app.core.db import utcnow
from app.core.settings import Settings
from app.runs.models import (
    TERMINAL_STATUSES,
    Run,
    RunEvent,
    RunKind,
    RunStatus,
    Step,
    StepStatus,
)
from tests.factories import issue_token, sample_service
from tests.helpers import (
    REDIS_URL,
    REPO_ROOT,
    create_pg_database,
    drop_pg_database,
    free_port,
    in_thread,
    stop_services,
)
from tests.upgrade.conftest import Release
from tests.upgrade.release import cli, python_env

pytestmark = [pytest.mark.slow, pytest.mark.early]

RATE = 50  # requests per second, all phases
PHASE_SECONDS = 5.0  # load between two replacements
ENVIRONMENTS = ("blue", "green")
START_WITHIN = 90.0  # a process's start-up on a busy machine
SETTLE_WITHIN = 90.0  # every run terminal after the load ends
# A run's lease outlasts the test: a run a stopped worker kept would stay in progress (the
# reconciler requeues it only once its lease expires), so the test sees it.
RUN_LEASE_SECONDS = 600
# A deployment waits this long after its service is healthy, so that a worker holds one
# for a while (the old worker is stopped while it does).
DEPLOY_SETTLE_SECONDS = 3.0


@dataclass
class Proc:
    """One ``formula-ops api`` or ``worker`` process of one release."""

    release: str  # "old" or "new"
    role: str  # "api" or "worker"
    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def name(self) -> str:
        where = f":{self.port}" if self.port else ""
        return f"{self.release} {self.role}{where} (pid {self.process.pid})"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the graceful exit; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still runs {timeout} s after SIGTERM:\n{self.output()[-3000:]}"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@dataclass
class Cluster:
    """The processes of both releases on one database, Redis queue and state folder."""

    trees: dict[str, Path]
    env: dict[str, str]
    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, release: str, role: str) -> Proc:
        tree = self.trees[release]
        port = free_port() if role == "api" else None
        args = ["api", "--host", "127.0.0.1", "--port", str(port)] if port else ["worker"]
        log = self.workdir / f"{release}-{role}-{len(self.procs)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                cli(*args),
                cwd=tree,
                env=python_env(tree, **self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(release, role, process, log, port)
        self.procs.append(proc)
        return proc

    async def started(self, proc: Proc) -> Proc:
        deadline = time.monotonic() + START_WITHIN
        async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
            while True:
                assert proc.process.poll() is None, f"{proc.name} exited:\n{proc.output()}"
                if proc.port is not None:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{proc.port}/health")).is_success:
                            return proc
                elif "Starting worker for" in proc.output():
                    return proc
                assert time.monotonic() < deadline, f"{proc.name} did not start:\n{proc.output()}"
                await asyncio.sleep(0.1)

    def errors(self) -> list[str]:
        """The lines every process logged at ERROR (a worker that refuses the schema, a
        job that fails on it, an unhandled request)."""
        return [
            f"{proc.name}: {line[:1500]}"
            for proc in self.procs
            for line in proc.output().splitlines()
            if '"level": "ERROR"' in line or '"level": "CRITICAL"' in line
        ]

    def kill_all(self) -> None:
        for proc in self.procs:
            proc.kill()


@dataclass
class Load:
    """50 requests/s round robin over the live API ports; every answer checked."""

    http: httpx.AsyncClient
    headers: dict[str, str]
    ports: list[int] = field(default_factory=list)
    in_flight: Counter[int] = field(default_factory=Counter)
    sent: int = 0
    replays: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # run id -> kind
    # (path, key, body, first answer's id) of every create, for replays.
    creates: list[tuple[str, str, dict[str, Any], str]] = field(default_factory=list)
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def add(self, port: int) -> None:
        self.ports.append(port)

    async def drain(self, port: int) -> None:
        """Send nothing more to ``port``; return once its requests in flight are answered."""
        self.ports.remove(port)
        while self.in_flight[port]:  # noqa: ASYNC110 - a counter, no event to wait for
            await asyncio.sleep(0.01)

    def _request(self, n: int) -> tuple[str, str, dict[str, Any] | None, dict[str, str], set[int]]:
        """The ``n``-th request: method, path, JSON body, extra headers, statuses expected."""
        slot = n % 50
        if slot in (0, 25):
            key = str(uuid.uuid4())
            return "POST", "/v1/health-checks", {}, {"Idempotency-Key": key}, {202}
        if n % 100 == 12:
            env = ENVIRONMENTS[n // 100 % len(ENVIRONMENTS)]
            body = {
                "environment": env,
                "service": "web",
                "version": f"1.0.{next(self.versions)}",
                "description": "upgrade under load",
            }
            return "POST", "/v1/deployments", body, {"Idempotency-Key": str(uuid.uuid4())}, {202}
        if slot == 37 and self.creates:
            path, key, body, _ = random.choice(self.creates)
            self.replays += 1
            return "POST", path, body, {"Idempotency-Key": key}, {202}
        if slot % 4 == 0 and self.created:
            run_id = random.choice(list(self.created))
            return "GET", f"/v1/runs/{run_id}", None, {}, {200}
        if slot % 4 == 1:
            return "GET", "/v1/runs?limit=20", None, {}, {200}
        if slot % 4 == 2:
            return "GET", "/v1/deployments?limit=10", None, {}, {200}
        return "GET", "/v1/health-checks?limit=10", None, {}, {200}

    async def _send(self, n: int, port: int) -> None:
        method, path, body, extra, expected = self._request(n)
        try:
            response = await self.http.request(
                method,
                f"http://127.0.0.1:{port}{path}",
                json=body,
                headers={**self.headers, **extra},
            )
        except httpx.HTTPError as exc:
            self.statuses[type(exc).__name__] += 1
            self.failures.append(f"{method} {path} on :{port}: {exc!r} at {time.time():.3f}")
            return
        finally:
            self.in_flight[port] -= 1
        self.statuses[str(response.status_code)] += 1
        if response.status_code not in expected:
            self.failures.append(
                f"{method} {path} on :{port}: {response.status_code} {response.text[:300]}"
            )
            return
        if method == "POST":
            run_id = response.json()["id"]
            key = extra["Idempotency-Key"]
            replayed = next((c for c in self.creates if c[1] == key), None)
            if replayed is None:
                self.creates.append((path, key, body or {}, run_id))
                self.created[run_id] = path.rsplit("/", 1)[-1]
            elif replayed[3] != run_id:
                self.failures.append(f"replay of {key} answered {run_id}, not {replayed[3]}")

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for n in itertools.count():
            if stop.is_set():
                break
            await asyncio.sleep(max(0.0, begin + n / RATE - loop.time()))
            port = self.ports[n % len(self.ports)]
            self.sent += 1
            # Counted before the task runs: a drain that starts meanwhile waits for it.
            self.in_flight[port] += 1
            task = asyncio.create_task(self._send(n, port))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if self.tasks:
            await asyncio.wait(set(self.tasks))


@pytest.fixture
def database() -> Iterator[str]:
    name = f"formula_ops_upgrade_{uuid.uuid4().hex[:10]}"
    yield create_pg_database(name)
    drop_pg_database(name)


@pytest.fixture
async def shared(database: str, tmp_path: Path) -> AsyncIterator[tuple[Settings, AppContext]]:
    """Settings every process shares (database, own queue and prefix on the shared Redis,
    one state folder and secret key); the test's own context on them."""
    prefix = f"formula-ops-upgrade-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        state_dir=tmp_path / "state",
        database_url=SecretStr(database),
        redis_url=SecretStr(REDIS_URL),
        queue_name=f"{prefix}:queue",
        redis_prefix=prefix,
        secret_key=SecretStr(secrets.token_urlsafe(48)),
    )
    settings.state_dir.mkdir()
    context = build_context(settings)
    yield settings, context
    try:
        await stop_services(context)  # the sample services the deployments started
    finally:
        keys = [k async for k in context.redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await context.redis.delete(*keys)
        await context.aclose()


def process_env(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    assert settings.secret_key is not None
    return {
        "FORMULA_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
        "FORMULA_OPS_REDIS_URL": settings.redis_url.get_secret_value(),
        "FORMULA_OPS_QUEUE_NAME": settings.queue_name,
        "FORMULA_OPS_REDIS_PREFIX": settings.redis_prefix,
        "FORMULA_OPS_STATE_DIR": str(settings.state_dir),
        "FORMULA_OPS_SECRET_KEY": settings.secret_key.get_secret_value(),
        "FORMULA_OPS_LOG_LEVEL": "INFO",
        "FORMULA_OPS_RUN_LEASE_SECONDS": str(RUN_LEASE_SECONDS),
        # One token sends every request of the load.
        "FORMULA_OPS_TOKEN_REQUESTS_PER_MINUTE": "1000000",
        # Nothing but the load's runs: no periodic routine fires during the test.
        "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
        "FORMULA_OPS_BACKUPS__SCHEDULE_ENABLED": "false",
        "FORMULA_OPS_SCHEDULES__FIRE_ENABLED": "false",
        "FORMULA_OPS_MAINTENANCES__SCHEDULE_ENABLED": "false",
    }


async def run_held_by(context: AppContext, cluster: Cluster, pid: int, within: float = 30) -> str:
    """A deployment the worker process ``pid`` (its worker id is host:pid:…) has just
    started: it still has seconds to go when the signal arrives (a health check may end
    before)."""
    deadline = time.monotonic() + within
    while True:
        async with context.sessionmaker() as session:
            held = await session.scalar(
                select(Run.id)
                .where(
                    Run.kind == RunKind.DEPLOYMENT,
                    Run.status == RunStatus.IN_PROGRESS,
                    Run.lease_owner.like(f"%:{pid}:%"),
                    Run.started_at > utcnow() - dt.timedelta(seconds=0.5),
                )
                .limit(1)
            )
        if held is not None:
            return str(held)
        assert not cluster.errors(), "\n".join(cluster.errors())
        assert time.monotonic() < deadline, f"worker {pid} started no deployment in {within} s"
        await asyncio.sleep(0.02)


async def settle(context: AppContext, within: float) -> dict[str, str]:
    """Every run's status once all are terminal, or when ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        async with context.sessionmaker() as session:
            statuses = dict((await session.execute(select(Run.id, Run.status))).all())
        if all(s in TERMINAL_STATUSES for s in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.5)


async def test_replacing_each_old_process_under_load_fails_no_request_and_loses_no_run(
    old_release: Release, shared: tuple[Settings, AppContext], tmp_path: Path
) -> None:
    settings, context = shared
    began = time.monotonic()
    in_thread(migrate.upgrade, settings)  # the new release's migrate: expand only
    admin = await issue_token(context)
    cluster = Cluster({"old": old_release.tree, "new": REPO_ROOT}, process_env(settings), tmp_path)
    # A connection per request, as nginx proxies by default: a kept-alive connection can
    # be closed by uvicorn's keep-alive timeout (5 s after its last answer) just as a
    # request goes out on it, and a busy client sees that answer late.
    http = httpx.AsyncClient(
        trust_env=False,
        timeout=60,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=0),
    )
    load = Load(http, admin.headers)
    stop = asyncio.Event()
    exits: dict[str, int] = {}
    timeline: list[str] = []

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:6.1f}s {what}")

    async def replace_api(old: Proc, new: Proc) -> None:
        assert new.port is not None
        assert old.port is not None
        load.add(new.port)
        await load.drain(old.port)
        exits[old.name] = await asyncio.to_thread(old.stop)
        note(f"{new.name} in, {old.name} drained and out (exit {exits[old.name]})")

    try:
        # The previous release's processes and one of each of the new release's serve; the
        # replacements start with them (a start takes seconds on a busy machine) and each
        # takes over in its turn.
        starting = [
            cluster.start("old", "api"),
            cluster.start("old", "api"),
            cluster.start("old", "worker"),
            cluster.start("new", "api"),
            cluster.start("new", "worker"),
            cluster.start("new", "api"),
            cluster.start("new", "worker"),
            cluster.start("new", "api"),
        ]
        started = await asyncio.gather(*(cluster.started(p) for p in starting))
        old_api_1, old_api_2, old_worker, new_api, _, next_api, next_worker, last_api = started
        note("2 old api, 1 old worker; 3 new api, 2 new worker started")
        # The environments are made through the old release's API (its INSERT leaves out
        # the columns the new schema added).
        async with httpx.AsyncClient(trust_env=False, timeout=30) as setup:
            base = f"http://127.0.0.1:{old_api_1.port}/v1/environments"
            for env in ENVIRONMENTS:
                made = await setup.put(
                    f"{base}/{env}", json={"description": "upgrade"}, headers=admin.headers
                )
                assert made.status_code == 201, made.text
                made = await setup.put(
                    f"{base}/{env}/services/web",
                    json=sample_service(free_port(), settle=DEPLOY_SETTLE_SECONDS),
                    headers=admin.headers,
                )
                assert made.status_code == 201, made.text
        for proc in (old_api_1, old_api_2, new_api):
            assert proc.port is not None
            load.add(proc.port)
        load_started = time.monotonic()
        sending = asyncio.create_task(load.run(stop))
        note("load started")
        await asyncio.sleep(PHASE_SECONDS)
        await replace_api(old_api_1, next_api)
        await asyncio.sleep(PHASE_SECONDS)
        # Stopped while it executes a run: the run goes back to the queue.
        held = await run_held_by(context, cluster, old_worker.process.pid)
        exits[old_worker.name] = await asyncio.to_thread(old_worker.stop)
        note(f"{next_worker.name} in, {old_worker.name} out (exit {exits[old_worker.name]})")
        await asyncio.sleep(PHASE_SECONDS)
        await replace_api(old_api_2, last_api)
        await asyncio.sleep(PHASE_SECONDS)
        stop.set()
        await sending
        load_seconds = time.monotonic() - load_started
        note(f"load stopped: {load.sent} requests in {load_seconds:.1f} s")
        statuses = await settle(context, SETTLE_WITHIN)
        note("runs settled")
        for proc in cluster.procs:
            if proc.process.poll() is None:
                exits[proc.name] = await asyncio.to_thread(proc.stop)
    finally:
        stop.set()
        await http.aclose()
        cluster.kill_all()

    async with context.sessionmaker() as session:
        handed_back = await session.scalar(
            select(func.count()).select_from(RunEvent).where(RunEvent.type == "run.requeued")
        )
        endings = Counter(
            f"{kind} {status}" + (f" {failure}" if failure else "")
            for kind, status, failure in (
                await session.execute(select(Run.kind, Run.status, Run.failure_type))
            ).all()
        )
        requeued = [
            e.data.get("reason")
            for e in await session.scalars(
                select(RunEvent).where(RunEvent.run_id == held, RunEvent.type == "run.requeued")
            )
        ]
        failed_steps = Counter(
            await session.scalars(select(Step.name).where(Step.status == StepStatus.FAILURE))
        )
    print(f"\nprevious release {old_release.commit[:12]}; timeline:\n" + "\n".join(timeline))
    print(
        f"requests sent {load.sent} in {load_seconds:.1f} s ({load.sent / load_seconds:.1f}/s; "
        f"{RATE}/s asked), answers {dict(sorted(load.statuses.items()))}, "
        f"failed {len(load.failures)}"
    )
    print(
        f"runs created {len(load.created)} ({dict(Counter(load.created.values()))}), "
        f"replays {load.replays}; in the database {len(statuses)}: {dict(endings)}; "
        f"run.requeued events {handed_back}; failed steps {dict(failed_steps)}"
    )
    print(f"run {held} held by the old worker at SIGTERM: requeued {requeued}, {statuses[held]}")
    print(f"exit codes {exits}; wall {time.monotonic() - began:.1f} s")

    for failure in load.failures[:20]:
        print("FAILED", failure)
    assert cluster.errors() == [], "\n".join(cluster.errors())
    assert load.failures == [], "\n".join(load.failures[:20])
    assert load.created, "the load created no run"
    lost = {r: s for r, s in statuses.items() if s not in TERMINAL_STATUSES}
    assert lost == {}, f"runs not terminal {SETTLE_WITHIN} s after the load"
    assert set(load.created) <= set(statuses)
    assert requeued == ["worker_stopped"], f"run {held}: not handed back as its worker stopped"
    # A worker exits 0 on SIGTERM; uvicorn ends by raising the SIGTERM it caught again,
    # once it has shut down gracefully.
    for proc in cluster.procs:
        if proc.role == "worker":
            assert exits[proc.name] == 0, proc.output()[-3000:]
        else:
            assert exits[proc.name] == -signal.SIGTERM, proc.output()[-3000:]
            assert "Application shutdown complete" in proc.output(), proc.name
