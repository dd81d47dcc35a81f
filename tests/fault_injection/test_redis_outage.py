"""Redis killed (SIGKILL) and started again, five times, while clients create deployments
and health checks and read readiness: no process exits, no answer is a 500 (a 503 with
``Retry-After`` is fine while Redis is down), creating requests still answer 202, and
every acknowledged run ends terminal once Redis is back.

Three set-ups, each with real subprocesses:

- ``formula-ops serve`` pointed at a private redis-server (FORMULA_OPS_REDIS_URL);
- ``formula-ops serve`` with its own embedded redis-server, which it starts again;
- ``formula-ops api`` + ``formula-ops worker --processes 2`` on PostgreSQL (a database
  of this test) and a private redis-server.

The private redis-server listens on a free port of its own: the shared one is never
touched. Deployments go to the ``local`` environment (the sample web service, run by
the ``process`` driver), which the test stops at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.bootstrap import build_context
from app.core import migrate
from app.core.settings import Settings
from app.embedded.redis import process_alive
from app.embedded.seed import LocalPorts, seed_local, stop_process_services
from tests.e2e.serve_process import FORMULA_OPS, ServeProcess
from tests.e2e.test_worker_processes import Supervisor
from tests.helpers import create_pg_database, drop_pg_database, free_port, in_thread

pytestmark = pytest.mark.slow

OUTAGES = 5
UP_SECONDS = 2.0  # load with Redis up between two outages
DOWN_SECONDS = 1.5  # load with Redis down (private Redis only)
DRAIN_SECONDS = 120.0  # every acknowledged run ends within this once Redis is back
# Short enough that the reconciler enqueues what an outage lost within the test.
FAST_RECONCILE = {
    "FORMULA_OPS_RECONCILE_EVERY_SECONDS": "1",
    "FORMULA_OPS_RECONCILE_STALE_AFTER_SECONDS": "2",
    "FORMULA_OPS_RUN_LEASE_SECONDS": "10",
    "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
    "FORMULA_OPS_WORKER_POLL_DELAY_SECONDS": "0.2",
    "FORMULA_OPS_TOKEN_REQUESTS_PER_MINUTE": "100000",
    "PYTHONFAULTHANDLER": "1",
}
TERMINAL = {"success", "failure", "error", "cancelled", "rolled_back"}


# -- a redis-server of this test ----------------------------------------------------------


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A redis-server on a free loopback port, no persistence; kill -9 and start again."""

    def __init__(self, workdir: Path) -> None:
        executable = shutil.which("redis-server")
        assert executable, "redis-server is not installed"
        self.executable = executable
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.workdir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _answers_ping(self.port):
            assert self.process.poll() is None, (self.workdir / "redis.log").read_text()
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    (tmp_path / "redis").mkdir()
    server = PrivateRedis(tmp_path / "redis")
    yield server
    server.stop()


# -- the clients --------------------------------------------------------------------------


@dataclass
class Load:
    """What the clients sent and got."""

    url: str
    token: str
    environment: str = "local"
    services: tuple[str, ...] = ("backend",)
    redis_down: bool = False
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    accepted_while_down: int = 0
    acknowledged: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # 500s, 503s without Retry-After
    finished: set[str] = field(default_factory=set)
    pending: dict[str, str] = field(default_factory=dict)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def note(self, what: str, response: httpx.Response) -> None:
        self.answers[(what, response.status_code)] += 1
        if response.status_code >= 500 and (
            response.status_code != 503 or "retry-after" not in response.headers
        ):
            self.failures.append(f"{what}: {response.status_code} {response.text[:300]}")

    def accepted(self, what: str, response: httpx.Response, created: bool) -> None:
        self.note(what, response)
        if response.status_code in (201, 202) and created:
            self.acknowledged.append(str(response.json()["id"]))
            if self.redis_down:
                self.accepted_while_down += 1

    async def deployer(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """One deployment at a time (they queue per environment), each a new version."""
        for n in itertools.count(1):
            if stop.is_set():
                return
            body = {
                "environment": self.environment,
                "services": [{"name": name, "version": f"1.0.{n}"} for name in self.services],
                "backup": False,
            }
            key = str(uuid.uuid4())
            response = await self._send(
                http,
                "POST",
                "/v1/deployments",
                json=body,
                headers=self.headers(**{"Idempotency-Key": key}),
            )
            if response is None:
                continue
            self.accepted("create deployment", response, created=True)
            if response.status_code in (201, 202):
                await self._until_terminal(http, str(response.json()["id"]), stop)
            else:
                await asyncio.sleep(0.2)

    async def checker(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            response = await self._send(http, "POST", "/v1/health-checks", headers=self.headers())
            if response is not None:
                self.accepted("create health check", response, created=True)
            await asyncio.sleep(0.6)

    async def reader(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for path in ("/ready", "/v1/runs?limit=20"):
                response = await self._send(http, "GET", path, headers=self.headers())
                if response is not None:
                    self.note(f"GET {path.partition('?')[0]}", response)
                    if path == "/ready" and response.status_code == 503:
                        checks = response.json()["checks"]
                        if checks["redis"]["status"] == "ok":  # 503 names what is down
                            self.failures.append(f"/ready: 503 with Redis ok: {checks}")
            await asyncio.sleep(0.2)

    async def _until_terminal(
        self, http: httpx.AsyncClient, run_id: str, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            response = await self._send(http, "GET", f"/v1/runs/{run_id}", headers=self.headers())
            if response is not None:
                self.note("GET /v1/runs/{id}", response)
                if response.status_code == 200 and response.json()["status"] in TERMINAL:
                    return
            await asyncio.sleep(0.3)

    async def _send(
        self, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        try:
            return await http.request(method, f"{self.url}{path}", **kwargs)
        except httpx.TransportError as exc:  # the server must keep answering
            self.failures.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)
            return None

    async def unfinished(self, http: httpx.AsyncClient) -> dict[str, str]:
        """The acknowledged runs not yet terminal, with their status."""
        for run_id in [r for r in self.acknowledged if r not in self.finished]:
            response = await http.get(f"{self.url}/v1/runs/{run_id}", headers=self.headers())
            assert response.status_code == 200, response.text
            if response.json()["status"] in TERMINAL:
                self.finished.add(run_id)
            else:
                self.pending[run_id] = response.json()["status"]
        self.pending = {k: v for k, v in self.pending.items() if k not in self.finished}
        return self.pending


async def ride_out_outages(
    load: Load,
    kill: Callable[[], None],
    restart: Callable[[], None] | None,
    alive: Callable[[], str | None],
) -> None:
    """Clients run while Redis is killed and started again ``OUTAGES`` times; then every
    acknowledged run must end. ``restart`` None: the server starts its Redis itself.
    ``alive`` names a process that exited (None while all run)."""
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        clients = [
            asyncio.create_task(load.deployer(http, stop)),
            asyncio.create_task(load.checker(http, stop)),
            asyncio.create_task(load.checker(http, stop)),
            asyncio.create_task(load.reader(http, stop)),
        ]
        try:
            for _ in range(OUTAGES):
                await asyncio.sleep(UP_SECONDS)
                load.redis_down = True
                kill()
                if restart is not None:
                    await asyncio.sleep(DOWN_SECONDS)
                    restart()
                load.redis_down = False
                await until(lambda: _ready(http, load, alive), 30, "readiness after the outage")
                assert alive() is None, alive()
            await asyncio.sleep(UP_SECONDS)
        finally:
            stop.set()
            await asyncio.gather(*clients)

        async def all_terminal() -> bool:
            return not await load.unfinished(http)

        await until(all_terminal, DRAIN_SECONDS, "every acknowledged run to end", load.pending)
    assert alive() is None, alive()
    assert not load.failures, load.failures[:20]
    assert load.answers[("create deployment", 202)] >= 2, load.answers
    assert load.answers[("create health check", 202)] >= OUTAGES, load.answers


async def _ready(http: httpx.AsyncClient, load: Load, alive: Callable[[], str | None]) -> bool:
    assert alive() is None, alive()
    with contextlib.suppress(httpx.TransportError):
        return (await http.get(f"{load.url}/ready")).status_code == 200
    return False


async def until(
    check: Callable[[], Awaitable[bool]], within: float, what: str, state: object = None
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {within} s waiting for {what}: {state}")
        await asyncio.sleep(0.25)


def create_token(env: dict[str, str], workdir: Path) -> str:
    created = subprocess.run(
        [str(FORMULA_OPS), "tokens", "create", "--role", "admin", "--name", "redis-faults"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return created.stdout.strip().splitlines()[-1]


# -- serve --------------------------------------------------------------------------------


@pytest.fixture
def stopping() -> Iterator[list[ServeProcess]]:
    """Serve processes to kill if a test left them running (with their sample services)."""
    started: list[ServeProcess] = []
    yield started
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait()
            with contextlib.suppress(OSError, ValueError):
                os.kill(served.redis_pid, signal.SIGKILL)


def _serve_alive(served: ServeProcess) -> Callable[[], str | None]:
    return lambda: None if served.process.poll() is None else f"serve exited:\n{served.output()}"


async def test_serve_rides_out_a_private_redis_restarted_five_times(
    tmp_path: Path, private_redis: PrivateRedis, stopping: list[ServeProcess]
) -> None:
    served = ServeProcess(tmp_path, FORMULA_OPS_REDIS_URL=private_redis.url, **FAST_RECONCILE)
    stopping.append(served)
    served.wait_healthy()
    load = Load(served.url, create_token(served.env, tmp_path))

    await ride_out_outages(load, private_redis.kill, private_redis.start, _serve_alive(served))

    assert load.accepted_while_down > 0, load.answers  # creating requests still answered
    assert load.answers[("GET /ready", 503)] > 0, load.answers  # readiness named the outage
    output = served.output()
    assert served.stop() == 0, output
    assert output.count("worker: Redis unreachable") <= OUTAGES, output  # not once per retry
    assert "worker: Redis reachable again" in output, output


async def test_serve_starts_its_embedded_redis_again_when_it_dies(
    tmp_path: Path, stopping: list[ServeProcess]
) -> None:
    served = ServeProcess(tmp_path, **FAST_RECONCILE)
    stopping.append(served)
    served.wait_healthy()
    load = Load(served.url, create_token(served.env, tmp_path))
    killed: list[int] = []

    def kill() -> None:
        pid = served.redis_pid
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    await ride_out_outages(load, kill, None, _serve_alive(served))

    assert len(set(killed)) == OUTAGES  # each time a new redis-server, started by serve
    assert served.redis_pid not in killed
    assert process_alive(served.redis_pid)
    output = served.output()
    assert output.count("starting it again") == OUTAGES, output
    assert served.stop() == 0, output


# -- api + worker --processes 2 on PostgreSQL ---------------------------------------------


class ApiProcess:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "api.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(FORMULA_OPS), "api", "--port", str(self.port)],
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

    async def wait_healthy(self) -> None:
        async with httpx.AsyncClient(trust_env=False) as http:

            async def healthy() -> bool:
                assert self.process.poll() is None, self.output()
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get(f"{self.url}/health")).status_code == 200
                return False

            await until(healthy, 60, "the API")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()


@pytest.fixture
def pg_settings(tmp_path: Path, private_redis: PrivateRedis) -> Iterator[Settings]:
    name = f"formula_ops_redis_faults_{os.getpid()}"
    url = create_pg_database(name)
    prefix = f"formula-ops-redis-faults-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=SecretStr(url),
        redis_url=SecretStr(private_redis.url),
        queue_name=f"{prefix}:queue",
        redis_prefix=prefix,
        state_dir=tmp_path / "state",
    )
    try:
        in_thread(migrate.upgrade, settings)
        yield settings
    finally:
        drop_pg_database(name)


@pytest.fixture
async def local_environment(pg_settings: Settings) -> AsyncIterator[None]:
    """The sample ``local`` environment on free ports; its processes stopped at the end."""
    context = build_context(pg_settings)
    ports = LocalPorts()
    try:
        await seed_local(context, ports)
        yield
    finally:
        await stop_process_services(context)
        ports.release()
        await context.aclose()


async def test_api_and_two_worker_processes_ride_out_redis_restarted_five_times(
    tmp_path: Path, pg_settings: Settings, private_redis: PrivateRedis, local_environment: None
) -> None:
    assert pg_settings.database_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    env |= {
        "FORMULA_OPS_DATABASE_URL": pg_settings.database_url.get_secret_value(),
        "FORMULA_OPS_REDIS_URL": private_redis.url,
        "FORMULA_OPS_QUEUE_NAME": pg_settings.queue_name,
        "FORMULA_OPS_REDIS_PREFIX": pg_settings.redis_prefix,
        "FORMULA_OPS_STATE_DIR": str(pg_settings.state_dir),
        **FAST_RECONCILE,
    }
    supervisor = Supervisor(
        pg_settings, tmp_path, 2, FORMULA_OPS_WORKER_MAX_JOBS="10", **FAST_RECONCILE
    )
    api = ApiProcess(env, tmp_path)
    try:
        children = await supervisor.wait_started()
        await api.wait_healthy()
        load = Load(api.url, create_token(env, tmp_path))

        def alive() -> str | None:
            if api.process.poll() is not None:
                return f"the API exited:\n{api.output()}"
            if supervisor.process.poll() is not None:
                return f"the supervisor exited:\n{supervisor.output()}"
            if supervisor.children() != children:
                return f"a worker process exited:\n{supervisor.output()[-6000:]}"
            return None

        await ride_out_outages(load, private_redis.kill, private_redis.start, alive)

        assert load.accepted_while_down > 0, load.answers
        assert load.answers[("GET /ready", 503)] > 0, load.answers
        output = supervisor.output()
        assert "exited unexpectedly" not in output, output[-6000:]
        assert supervisor.stop(signal.SIGTERM) == 0, output[-6000:]
        # uvicorn ends a graceful shutdown by raising the signal it got again
        assert api.stop() in (0, -signal.SIGTERM), api.output()[-6000:]
    finally:
        supervisor.kill_all()
        if api.process.poll() is None:
            api.process.kill()
            api.process.wait()
