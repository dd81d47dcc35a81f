"""A whole production cluster on this machine, as real processes, for the scale tests.

:class:`Cluster` starts a private PostgreSQL (``initdb`` as user ``postgres`` in a
temporary directory) and a private ``redis-server`` (both on free loopback ports, so
they can be killed and restarted without touching the shared servers), migrates the
database, and starts two ``formula-ops api`` processes and one ``formula-ops worker
--processes 3`` supervisor, each in its own process group and logging to a file.
:class:`WebhookReceiver` is an HTTP server on 127.0.0.1 in the test's event loop that
records every delivery (its ``webhook-id``, body and whether its Standard Webhooks
signature verifies).

The fault methods break one part at a time: SIGKILL a worker child (the supervisor
starts another), SIGKILL Redis and start it again on the same port, ``pg_ctl restart
-m fast`` (every connection dropped), SIGKILL an API process and start it again on its
port. :meth:`Cluster.close` kills everything it started by pid and removes its
directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from aiohttp import web

from app.runs.models import TERMINAL_STATUSES
from tests.helpers import REPO_ROOT, TEST_CATALOG, free_port

PG_BIN = Path(os.environ.get("FORMULA_OPS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
DATABASE = "formula_ops"
WORKER_PROCESSES = 3
API_PROCESSES = 2
CLI = "from app.cli.main import main; main()"


def _shared_tmp() -> str:
    """A temporary folder that the ``postgres`` user may enter too (``/tmp`` unless its
    mode keeps others out)."""
    for candidate in (tempfile.gettempdir(), "/var/tmp", "/dev/shm"):  # noqa: S108
        if os.stat(candidate).st_mode & 0o001:
            return candidate
    raise AssertionError("no temporary folder that the postgres user may enter")


def _children(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(stat.parent.name))
    return found


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


class Logged:
    """A subprocess in its own process group whose output goes to ``log_path``."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.argv, self.env, self.log_path, self.cwd = argv, env, log_path, cwd
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def restart(self) -> None:
        _kill_group(self.process)
        self.process = self._start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        _kill_group(self.process)


@dataclass
class Api:
    port: int
    server: Logged

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Counts:
    """What the fault methods did (printed by the tests)."""

    worker_kills: int = 0
    worker_restarts_seen: int = 0
    redis_restarts: int = 0
    postgres_restarts: int = 0
    api_kills: int = 0


class Cluster:
    """PostgreSQL, Redis, two API processes and a worker supervisor; see the module."""

    def __init__(self, *, webhook_retry: list[float] | None = None, **extra_env: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="formula-ops-cluster-", dir=_shared_tmp()))
        self.root.chmod(0o777)  # PostgreSQL runs as `postgres`
        self.state_dir = self.root / "state"
        self.state_dir.mkdir()
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.database_url = f"postgresql://postgres@127.0.0.1:{self.pg_port}/{DATABASE}"
        self.redis: Logged | None = None
        self.apis: list[Api] = []
        self.worker: Logged | None = None
        self.counts = Counts()
        self._pg_started = False
        api_ports = [free_port() for _ in range(API_PROCESSES)]
        retry = webhook_retry or [0, 1, 2, 3, 5, 5, 5, 5, 5, 5, 5, 5]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
        self.env |= {
            # The processes run this checkout's code (not the one the virtualenv names).
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONFAULTHANDLER": "1",
            "FORMULA_OPS_DATABASE_URL": self.database_url,
            "FORMULA_OPS_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "FORMULA_OPS_STATE_DIR": str(self.state_dir),
            "FORMULA_OPS_RUNBOOKS__CATALOG_DIRS": json.dumps(
                [str(REPO_ROOT / "runbooks"), str(TEST_CATALOG)]
            ),
            "FORMULA_OPS_WEBHOOKS__ALLOWED_NETWORKS": "127.0.0.1/32",
            "FORMULA_OPS_WEBHOOKS__ALLOW_HTTP": "true",
            "FORMULA_OPS_WEBHOOKS__RETRY_SCHEDULE_SECONDS": json.dumps(retry),
            "FORMULA_OPS_WEBHOOKS__LEASE_SECONDS": "20",
            "FORMULA_OPS_WEBHOOKS__TIMEOUT_SECONDS": "5",
            # The health check probes the first API process (not the default port 8000).
            "FORMULA_OPS_HEALTH_CHECK__SERVICES": json.dumps(
                [{"name": "api", "url": f"http://127.0.0.1:{api_ports[0]}/health"}]
            ),
            "FORMULA_OPS_HEALTH_CHECK__DISK_PATHS": json.dumps([str(self.root)]),
            "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
            "FORMULA_OPS_BACKUPS__SCHEDULE_ENABLED": "false",
            # A killed worker's run is taken over after this (default 60 s).
            "FORMULA_OPS_RUN_LEASE_SECONDS": "10",
            "FORMULA_OPS_WORKER_POLL_DELAY_SECONDS": "0.2",
            # The tests kill worker processes on purpose, many times a minute: that is
            # not a crash loop (and each is started again after the shortest back-off).
            "FORMULA_OPS_WORKER_MAX_RESTARTS": "1000",
            "FORMULA_OPS_WORKER_RESTART_WINDOW_SECONDS": "1",
            "FORMULA_OPS_LOG_LEVEL": "INFO",
            **extra_env,
        }
        self._api_ports = api_ports

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start_postgres()
            self._start_redis()
            self._migrate()
            self.apis = [
                Api(port, self._api_process(number, port))
                for number, port in enumerate(self._api_ports)
            ]
            self.worker = Logged(
                [sys.executable, "-c", CLI, "worker", "--processes", str(WORKER_PROCESSES)],
                self.env,
                self.logs / "worker.log",
                self.root,
            )
            for api in self.apis:
                self.wait_api(api)
            self.wait_workers()
        except BaseException:
            self.close()
            raise

    def _api_process(self, number: int, port: int) -> Logged:
        argv = [sys.executable, "-c", CLI, "api", "--host", "127.0.0.1", "--port", str(port)]
        return Logged(argv, self.env, self.logs / f"api{number}.log", self.root)

    def close(self) -> None:
        for api in self.apis:
            api.server.kill()
        if self.worker is not None:
            children = _children(self.worker.pid)
            self.worker.kill()
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._stop_services()
        if self.redis is not None:
            self.redis.kill()
        if self._pg_started:
            with contextlib.suppress(subprocess.SubprocessError):
                self._pg_ctl("stop", "-m", "immediate", timeout=30)
        keep = os.environ.get("FORMULA_OPS_CLUSTER_LOGS")  # a folder to keep the logs in
        if keep:
            shutil.copytree(self.logs, Path(keep) / self.root.name, dirs_exist_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop_services(self) -> None:
        """The services the ``process`` driver started (detached: they outlive workers)."""
        for path in (self.state_dir / "processes").glob("*/*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                pid = int(json.loads(path.read_text())["pid"])
                os.killpg(pid, signal.SIGKILL)

    # -- PostgreSQL ----------------------------------------------------------------------

    def _pg_ctl(self, *args: str, timeout: float = 150) -> None:
        """``pg_ctl`` waiting (``-w``) up to ``timeout`` seconds. A fast restart on 2 cores
        that a full suite keeps busy once took longer than 60 s (pg_ctl's own default)."""
        options = f"-p {self.pg_port} -k {self.root} -c listen_addresses=127.0.0.1"
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.root / "pg"), "-l"]
        argv += [str(self.logs / "postgres.log"), "-w", "-t", str(int(timeout) - 10)]
        argv += ["-o", options, *args]
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
        )

    def _start_postgres(self) -> None:
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.root / "pg"), "-U", "postgres"]
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *initdb, "--auth=trust", "-N"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )
        (self.logs / "postgres.log").touch()
        shutil.chown(self.logs / "postgres.log", "postgres")
        self.logs.chmod(0o777)
        with (self.root / "pg" / "postgresql.conf").open("a") as conf:
            # Nothing here must survive a crash of the machine: no fsync, small footprint.
            conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
            conf.write("max_connections = 200\nshared_buffers = 32MB\n")
        self._pg_ctl("start")
        self._pg_started = True
        with psycopg.connect(self.admin_url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def admin_url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{database}"

    def restart_postgres(self) -> None:
        """``pg_ctl restart -m fast``: every connection is dropped."""
        self._pg_ctl("restart", "-m", "fast")
        self.counts.postgres_restarts += 1

    def _migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-c", CLI, "migrate"],
            env=self.env,
            cwd=self.root,
            check=True,
            timeout=120,
            capture_output=True,
        )

    def token(self, role: str = "admin", *extra: str) -> str:
        """A new token made on the host (``formula-ops tokens create``): its value."""
        done = subprocess.run(
            [sys.executable, "-c", CLI, "tokens", "create", "--role", role, "--name", role, *extra],
            env=self.env,
            cwd=self.root,
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip().splitlines()[-1]

    # -- Redis ---------------------------------------------------------------------------

    def _start_redis(self) -> None:
        argv = [REDIS_SERVER, "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.root)]
        if self.redis is None:
            self.redis = Logged(argv, self.env, self.logs / "redis.log", self.root)
        else:
            self.redis.restart()
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), _connect(self.redis_port) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            assert time.monotonic() < deadline, self.redis.output()
            time.sleep(0.05)

    def restart_redis(self, down_seconds: float = 1.0) -> None:
        """SIGKILL Redis (it keeps nothing: every queued job is lost), start it again on
        the same port after ``down_seconds``."""
        assert self.redis is not None
        self.redis.kill()
        time.sleep(down_seconds)
        self._start_redis()
        self.counts.redis_restarts += 1

    # -- API processes -------------------------------------------------------------------

    def wait_api(self, api: Api, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while True:
            assert api.server.alive(), api.server.output()[-4000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{api.url}/health", timeout=2).status_code == 200:
                    return
            assert time.monotonic() < deadline, api.server.output()[-4000:]
            time.sleep(0.1)

    def kill_api(self, number: int) -> None:
        """SIGKILL API process ``number``."""
        self.apis[number].server.kill()
        self.counts.api_kills += 1

    def start_api(self, number: int) -> None:
        """Start API process ``number`` again on its port, until it answers."""
        api = self.apis[number]
        api.server.restart()
        self.wait_api(api)

    # -- workers -------------------------------------------------------------------------

    def worker_children(self) -> set[int]:
        assert self.worker is not None
        return _children(self.worker.pid)

    def wait_workers(self, within: float = 60) -> set[int]:
        """Until the supervisor has its three children; their pids."""
        assert self.worker is not None
        deadline = time.monotonic() + within
        while True:
            assert self.worker.alive(), f"the supervisor exited:\n{self.worker.output()[-4000:]}"
            children = self.worker_children()
            if len(children) == WORKER_PROCESSES:
                return children
            assert time.monotonic() < deadline, self.worker.output()[-4000:]
            time.sleep(0.1)

    def kill_worker(self, victim: int) -> None:
        """SIGKILL one worker child; check the supervisor starts another in its place."""
        os.kill(victim, signal.SIGKILL)
        self.counts.worker_kills += 1
        deadline = time.monotonic() + 30
        while True:
            children = self.worker_children()
            if len(children) == WORKER_PROCESSES and victim not in children:
                self.counts.worker_restarts_seen += 1
                return
            assert self.worker is not None
            assert self.worker.alive(), self.worker.output()[-4000:]
            assert time.monotonic() < deadline, (
                f"worker {victim} was not replaced:\n{self.worker.output()[-4000:]}"
            )
            time.sleep(0.05)

    def processes_alive(self) -> dict[str, bool]:
        alive = {f"api{n}": api.server.alive() for n, api in enumerate(self.apis)}
        alive["worker"] = self.worker is not None and self.worker.alive()
        return alive

    def logs_text(self, lines: int = 15) -> str:
        """The last error lines of each process's log (for failure messages)."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            errors = [line[:600] for line in text if '"ERROR"' in line or "Traceback" in line]
            parts.append(f"===== {path.name}: " + "\n".join(errors[-lines:]))
        return "\n".join(parts)

    def grep_logs(self, *needles: str) -> list[str]:
        """Lines of the API and worker logs holding any of ``needles``."""
        found = []
        for path in sorted(self.logs.glob("*.log")):
            if path.name in ("postgres.log", "redis.log"):
                continue
            for line in path.read_text(errors="replace").splitlines():
                if any(n in line for n in needles):
                    found.append(f"{path.name}: {line[:2000]}")
        return found

    # -- the database, read directly -----------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


def _connect(port: int) -> Any:
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=1)


# -- the webhook receiver ---------------------------------------------------------------


@dataclass
class Delivery:
    endpoint: str
    webhook_id: str
    body: bytes
    signed: bool


@dataclass
class WebhookReceiver:
    """Records every POST to ``/hook/<name>``; each answers 200. ``secrets`` (by endpoint
    name) verify the Standard Webhooks signature of what arrives."""

    url: str = ""
    health_url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._handle)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        self.health_url = f"http://127.0.0.1:{port}/health"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        given = request.headers.get("webhook-signature", "").split()
        secret = self.secrets.get(name)
        signed = secret is not None and _signature(secret, msg_id, stamp, body) in given
        self.deliveries.append(Delivery(name, msg_id, body, signed))
        return web.Response(status=200, text="ok")

    def ids(self, endpoint: str) -> set[str]:
        return {d.webhook_id for d in self.deliveries if d.endpoint == endpoint}


def _signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# -- a careful client ---------------------------------------------------------------------


RETRIED = {409, 429, 500, 502, 503, 504}


@dataclass
class Outcome:
    key: str
    kind: str
    status: int | None = None  # the final answer's status
    resource_id: str | None = None
    ids_seen: set[str] = field(default_factory=set)
    attempts: int = 0


@dataclass
class Ledger:
    """Every answer the clients got, by status (transport errors as ``"transport"``)."""

    statuses: dict[str, int] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)  # 500s, with their bodies
    no_retry_after: list[str] = field(default_factory=list)  # 503s without Retry-After

    def count(self, what: str) -> None:
        self.statuses[what] = self.statuses.get(what, 0) + 1


async def careful_post(
    clients: list[httpx.AsyncClient],
    start: int,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    kind: str,
    ledger: Ledger,
    *,
    give_up_after: float = 120,
) -> Outcome:
    """POST with one Idempotency-Key until a final answer, alternating between the API
    processes; a connection error, 409 (the same key still in flight), 429 and 5xx are
    retried with the same key after ``Retry-After`` (or a short back-off)."""
    key = str(uuid.uuid4())
    outcome = Outcome(key, kind)
    ledger.outcomes.append(outcome)
    deadline = time.monotonic() + give_up_after
    delay = 0.2
    while True:
        client = clients[(start + outcome.attempts) % len(clients)]
        outcome.attempts += 1
        wait = delay
        try:
            response = await client.post(
                path, json=body, headers={**headers, "Idempotency-Key": key}
            )
        except httpx.TransportError as exc:
            ledger.count("transport")
            outcome.status = None
            last = repr(exc)
        else:
            ledger.count(str(response.status_code))
            outcome.status = response.status_code
            last = response.text[:500]
            if response.status_code == 500:
                ledger.server_errors.append(f"{path}: {response.text[:1000]}")
            if response.status_code == 503 and "retry-after" not in response.headers:
                ledger.no_retry_after.append(f"{path}: {response.text[:300]}")
            if response.status_code < 300:
                found = response.json().get("id")
                if found:
                    outcome.ids_seen.add(found)
                    outcome.resource_id = found
                return outcome
            if response.status_code not in RETRIED:
                return outcome
            with contextlib.suppress(ValueError):
                wait = float(response.headers.get("retry-after", delay))
        if time.monotonic() > deadline:
            raise AssertionError(f"{kind} {key}: no answer within {give_up_after} s: {last}")
        await asyncio.sleep(min(wait, 5.0))
        delay = min(delay * 2, 2.0)


# -- what both scenarios set up and check -------------------------------------------------

TERMINAL = {str(status) for status in TERMINAL_STATUSES}


async def create_environments(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    names: list[str],
    services: list[str],
    health_url: str,
) -> None:
    """Environments whose services cost nothing to start (``sleep``, run by the real
    ``process`` driver) and report healthy through ``health_url`` (the receiver's):
    the scale tests measure the control plane, not its services."""
    for env in names:
        response = await http.put(f"/v1/environments/{env}", json={}, headers=headers)
        assert response.status_code in (200, 201), response.text
        for order, service in enumerate(services):
            body = {
                "driver": "process",
                "config": {"command": ["sleep", "3600"]},
                "health_url": health_url,
                "deploy_order": order,
            }
            response = await http.put(
                f"/v1/environments/{env}/services/{service}", json=body, headers=headers
            )
            assert response.status_code in (200, 201), response.text


async def register_endpoints(
    http: httpx.AsyncClient, headers: dict[str, str], receiver: WebhookReceiver, count: int
) -> list[str]:
    """``count`` webhook endpoints (every event type) on the receiver; their names."""
    names = []
    for number in range(count):
        name = f"e{number}"
        response = await http.post(
            "/v1/webhooks",
            json={"url": f"{receiver.url}/{name}", "description": name},
            headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == 201, response.text
        receiver.secrets[name] = response.json()["secret"]
        names.append(name)
    return names


async def wait_terminal(cluster: Cluster, ids: list[str], within: float) -> dict[str, str]:
    """Until every run of ``ids`` is terminal; their statuses (AssertionError after
    ``within`` seconds, naming those that are not)."""
    began = time.monotonic()
    deadline = began + within
    shown = began
    while True:
        rows = await asyncio.to_thread(
            cluster.query, "SELECT id, status FROM run WHERE id = ANY(%s)", ids
        )
        statuses = dict(rows)
        pending = {i: s for i, s in statuses.items() if s not in TERMINAL}
        if not pending and len(statuses) == len(ids):
            return statuses
        if time.monotonic() - shown >= 15:  # progress, in the output of a slow run
            shown = time.monotonic()
            print(
                f"  {shown - began:.0f} s: {len(statuses) - len(pending)} of {len(ids)} "
                f"runs ended, pending {dict(Counter(pending.values()))}",
                flush=True,
            )
        if time.monotonic() > deadline:
            missing = set(ids) - set(statuses)
            raise AssertionError(
                f"{len(pending)} runs not terminal within {within} s, {len(missing)} missing: "
                f"{list(pending.items())[:20]} {list(missing)[:5]}\n{cluster.logs_text()}"
            )
        await asyncio.sleep(0.5)


async def wait_sealed(cluster: Cluster, within: float = 60) -> int:
    """Until the sealer has linked every audit row into the chain; the number of rows."""
    deadline = time.monotonic() + within
    while True:
        ((unsealed, total),) = await asyncio.to_thread(
            cluster.query, "SELECT count(*) FILTER (WHERE seq IS NULL), count(*) FROM audit_event"
        )
        if unsealed == 0:
            return int(total)
        assert time.monotonic() < deadline, f"{unsealed} audit rows stay unsealed"
        await asyncio.sleep(0.5)


async def wait_delivered(
    cluster: Cluster, receiver: WebhookReceiver, endpoints: list[str], within: float
) -> list[str]:
    """Until every outbox event reached every endpoint at least once; the events' ids."""
    deadline = time.monotonic() + within
    while True:
        events = [
            str(row[0])
            for row in await asyncio.to_thread(cluster.query, "SELECT id FROM outbox_event")
        ]
        missing = {name: set(events) - receiver.ids(name) for name in endpoints}
        if not any(missing.values()):
            return events
        if time.monotonic() > deadline:
            some = {n: sorted(m)[:5] for n, m in missing.items() if m}
            rows = await asyncio.to_thread(
                cluster.query,
                "SELECT event_type, status, attempts, last_error FROM webhook_delivery "
                "WHERE event_id = ANY(%s) LIMIT 10",
                [i for m in missing.values() for i in m],
            )
            raise AssertionError(
                f"events not delivered within {within} s: "
                f"{ {n: len(m) for n, m in missing.items()} } e.g. {some}; deliveries: {rows}"
            )
        await asyncio.sleep(0.5)


def check_deliveries(receiver: WebhookReceiver) -> dict[str, int]:
    """Duplicates only under the same ``webhook-id`` (the same event, the same body), and
    every delivery signed; the counts."""
    bodies: dict[tuple[str, str], set[bytes]] = {}
    ids_by_event: dict[tuple[str, bytes], set[str]] = {}
    for d in receiver.deliveries:
        bodies.setdefault((d.endpoint, d.webhook_id), set()).add(d.body)
        ids_by_event.setdefault((d.endpoint, d.body), set()).add(d.webhook_id)
    unsigned = [d.webhook_id for d in receiver.deliveries if not d.signed]
    assert not unsigned, f"{len(unsigned)} deliveries whose signature does not verify"
    changed = {k: len(v) for k, v in bodies.items() if len(v) > 1}
    assert not changed, f"one webhook-id, different bodies: {changed}"
    renamed = [v for v in ids_by_event.values() if len(v) > 1]
    assert not renamed, f"one event delivered under several webhook-ids: {renamed[:5]}"
    return {
        "deliveries": len(receiver.deliveries),
        "distinct": len(bodies),
        "duplicates": len(receiver.deliveries) - len(bodies),
    }


def delivery_rows(cluster: Cluster) -> dict[str, int]:
    """The deliveries as the database has them: every (endpoint, event) fanned out once;
    how many needed more than one attempt (what the receiver saw twice)."""
    ((rows, pairs, retried, attempts),) = cluster.query(
        "SELECT count(*), count(DISTINCT (endpoint_id, event_id)), "
        "count(*) FILTER (WHERE attempts > 1), coalesce(sum(attempts), 0) FROM webhook_delivery"
    )
    assert rows == pairs, f"{rows - pairs} events fanned out twice to one endpoint"
    return {"rows": rows, "retried": retried, "attempts": attempts}
