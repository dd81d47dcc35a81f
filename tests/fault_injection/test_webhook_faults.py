"""At-least-once webhook delivery across crashes: a burst of 500 events written to the
outbox while ``formula-ops worker`` processes are killed with SIGKILL (twice, each
started again), the private Redis is flushed (twice) and restarted once. Afterwards
every event has reached every matching endpoint, duplicates are repeats of the same
``webhook-id`` only, every body verifies with ``standardwebhooks``, every delivery row
is ``succeeded``, the attempt log agrees with what the receivers saw (up to the
requests of batches whose worker was killed before it could record them), and no worker
exited except by our kills.

PostgreSQL is the test session's database; Redis is a redis-server of this test on a
free loopback port (the shared one is never flushed). The receivers are aiohttp servers
on 127.0.0.1; one of them answers 500 to the first request of some events, so the retry
schedule is part of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import standardwebhooks
from aiohttp import web
from sqlalchemy import select

from app.auth.roles import Role
from app.core.context import AppContext
from app.core.settings import Settings
from app.outbox.service import add_event
from app.webhooks.models import WebhookAttempt, WebhookDelivery
from tests.factories import IssuedToken, issue_token
from tests.fault_injection.test_redis_outage import PrivateRedis
from tests.fault_injection.test_run_engine_faults import WorkerProcess
from tests.webhooks.conftest import create_webhook

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("backend", ["postgres"], indirect=True),
]

EVENTS = 500
LEASE_SECONDS = 5
BATCH_SIZE = 16
MAX_JOBS = 4
SETTLE_SECONDS = 75.0  # every delivery succeeded within this after the burst
SEED = int(os.environ.get("FAULTS_SEED", random.randrange(2**32)))
TYPES = ("webhook.test", "webhook_endpoint.disabled")


# -- receivers ---------------------------------------------------------------------------


@dataclass
class Request:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float  # time.monotonic() on arrival


@dataclass
class Recorder:
    """Records every request; answers 500 to the first request of one event in
    ``fails_one_in`` (by a hash of its id; 0: none), 200 otherwise, after a short random
    pause (so a kill finds requests in flight)."""

    name: str
    rng: random.Random
    fails_one_in: int = 0
    url: str = ""
    requests: list[Request] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        webhook_id = request.headers.get("webhook-id", "")
        first = not any(r.webhook_id == webhook_id for r in self.requests)
        refuse = self.fails_one_in and zlib.crc32(webhook_id.encode()) % self.fails_one_in == 0
        status = 500 if first and refuse else 200
        self.requests.append(
            Request(webhook_id, dict(request.headers.items()), body, status, time.monotonic())
        )
        await asyncio.sleep(self.rng.uniform(0, 0.02))
        return web.Response(status=status, body=b"ok")


async def serve(recorder: Recorder) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("POST", "/hook", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recorder.url = f"http://127.0.0.1:{port}/hook"
    return runner


# -- servers and workers -----------------------------------------------------------------


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    (tmp_path / "redis").mkdir()
    server = PrivateRedis(tmp_path / "redis")
    yield server
    server.stop()


class Workers:
    """``formula-ops worker`` subprocesses on the test's database and the private Redis;
    remembers which ones the test killed."""

    def __init__(self, settings: Settings, redis_url: str, workdir: Path) -> None:
        assert settings.database_url is not None
        self.workdir = workdir
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
        env |= {
            "FORMULA_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
            "FORMULA_OPS_REDIS_URL": redis_url,
            "FORMULA_OPS_QUEUE_NAME": settings.queue_name,
            "FORMULA_OPS_REDIS_PREFIX": settings.redis_prefix,
            "FORMULA_OPS_STATE_DIR": str(settings.state_dir),  # its secret key unseals
            "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
            "FORMULA_OPS_WORKER_MAX_JOBS": str(MAX_JOBS),
            "FORMULA_OPS_WORKER_POLL_DELAY_SECONDS": "0.1",
            "FORMULA_OPS_WEBHOOKS__ALLOWED_NETWORKS": "127.0.0.1/32",
            "FORMULA_OPS_WEBHOOKS__ALLOW_HTTP": "true",
            "FORMULA_OPS_WEBHOOKS__LEASE_SECONDS": str(LEASE_SECONDS),
            "FORMULA_OPS_WEBHOOKS__RETRY_SCHEDULE_SECONDS": "[0,0.5,1,2,2,2,2,2]",
            "FORMULA_OPS_WEBHOOKS__DISPATCH_INTERVAL_SECONDS": "0.1",
            "FORMULA_OPS_WEBHOOKS__BATCH_SIZE": str(BATCH_SIZE),
            "PYTHONFAULTHANDLER": "1",
        }
        self.env = env
        self.running: dict[str, WorkerProcess] = {}
        self.killed: list[WorkerProcess] = []
        self.killed_at: list[float] = []  # time.monotonic() of each kill
        self.started = 0

    def start(self, slot: str) -> WorkerProcess:
        self.started += 1
        worker = WorkerProcess(f"{slot}-{self.started}", self.env, self.workdir)
        self.running[slot] = worker
        return worker

    async def wait_started(self, worker: WorkerProcess, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while "Starting worker for" not in worker.output():
            assert worker.alive(), f"worker {worker.name} exited:\n{worker.output()[-4000:]}"
            assert time.monotonic() < deadline, f"worker {worker.name} did not start"
            await asyncio.sleep(0.1)

    def kill(self, slot: str) -> None:
        worker = self.running.pop(slot)
        assert worker.alive(), f"worker {worker.name} exited:\n{worker.output()[-4000:]}"
        self.killed_at.append(time.monotonic())
        worker.kill()
        self.killed.append(worker)

    def exited(self) -> list[str]:
        """Logs of the workers that exited without being killed by the test."""
        return [
            f"worker {w.name} exited with {w.process.returncode}:\n{w.output()[-4000:]}"
            for w in self.running.values()
            if not w.alive()
        ]

    def logs(self) -> str:
        return "\n".join(
            f"--- worker {w.name}\n{w.output()}" for w in [*self.killed, *self.running.values()]
        )

    def stop_all(self) -> None:
        for worker in self.running.values():
            with contextlib.suppress(Exception):
                worker.kill()


@pytest.fixture
def workers(settings: Settings, private_redis: PrivateRedis, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(settings, private_redis.url, tmp_path)
    yield started
    started.stop_all()


# -- the burst and the faults ------------------------------------------------------------


async def burst(context: AppContext, rng: random.Random) -> dict[str, str]:
    """``EVENTS`` events in units of work of 1 to 12 events (about a third alone), over
    a few seconds; returns their ids and types."""
    written: dict[str, str] = {}
    while len(written) < EVENTS:
        size = 1 if rng.random() < 0.35 else rng.randint(2, 12)
        size = min(size, EVENTS - len(written))
        async with context.unit_of_work() as uow:
            for _ in range(size):
                kind = rng.choice(TYPES)
                data: dict[str, Any] = (
                    {"endpoint_id": "e", "message": f"m{len(written)}", "links": {}}
                    if kind == "webhook.test"
                    else {
                        "id": f"x{len(written)}",
                        "reason": "gone",
                        "detail": "d",
                        "failing_since": None,
                        "links": {},
                    }
                )
                event = await add_event(uow.session, kind, data)
                written[event.id] = kind
        await asyncio.sleep(rng.uniform(0, 0.03))
    return written


async def faults(workers: Workers, redis_server: PrivateRedis, log: list[str]) -> None:
    """Two SIGKILLs of a worker (each started again at once), two FLUSHALLs, one Redis
    restart, at spread-out moments of the burst."""
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=2)

    def flush() -> None:
        client.flushall()
        log.append("flushall")

    async def kill(slot: str) -> None:
        workers.kill(slot)
        log.append(f"kill {slot}")
        await workers.wait_started(workers.start(slot))

    await asyncio.sleep(1.0)
    await kill("a")
    await asyncio.sleep(0.7)
    flush()
    await asyncio.sleep(0.8)
    await kill("b")
    await asyncio.sleep(0.5)
    redis_server.kill()
    log.append("redis killed")
    await asyncio.sleep(0.5)
    redis_server.start()
    log.append("redis started")
    await asyncio.sleep(0.8)
    flush()
    client.close()


# -- the test ----------------------------------------------------------------------------


async def test_every_event_reaches_every_matching_endpoint_despite_kills_and_flushes(
    settings: Settings,
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    private_redis: PrivateRedis,
    workers: Workers,
) -> None:
    rng = random.Random(SEED)
    recorders = {
        "all": Recorder("all", random.Random(rng.random())),
        "flaky": Recorder("flaky", random.Random(rng.random()), fails_one_in=6),
        "disabled-only": Recorder("disabled-only", random.Random(rng.random())),
    }
    runners = [await serve(r) for r in recorders.values()]
    filters = {
        "all": ["*"],
        "flaky": ["webhook.*", "webhook_endpoint.disabled"],
        "disabled-only": ["webhook_endpoint.disabled"],
    }
    secrets: dict[str, str] = {}
    endpoint_ids: dict[str, str] = {}
    for name, recorder in recorders.items():
        hook = await create_webhook(
            client, operator, url=recorder.url, event_types=filters[name], description=name
        )
        secrets[name] = hook["secret"]
        endpoint_ids[name] = hook["id"]

    for slot in ("a", "b"):
        await workers.wait_started(workers.start(slot))
    fault_log: list[str] = []
    try:
        fault_task = asyncio.create_task(faults(workers, private_redis, fault_log))
        events = await burst(context, rng)
        await fault_task
        assert not workers.exited(), workers.exited()

        wanted = {
            (name, event_id)
            for event_id, kind in events.items()
            for name in recorders
            if name != "disabled-only" or kind == "webhook_endpoint.disabled"
        }

        def delivered() -> set[tuple[str, str]]:
            return {
                (name, r.webhook_id)
                for name, recorder in recorders.items()
                for r in recorder.requests
                if r.status == 200
            }

        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            assert not workers.exited(), workers.exited()
            statuses = await _statuses(context)
            if wanted <= delivered() and set(statuses) == {"succeeded"}:
                break
            if time.monotonic() > deadline:
                missing = sorted(wanted - delivered())
                pytest.fail(
                    f"seed {SEED}, faults {fault_log}: after {SETTLE_SECONDS} s "
                    f"{len(missing)} of {len(wanted)} deliveries not received "
                    f"(e.g. {missing[:5]}); delivery rows {statuses}\n"
                    f"{workers.logs()[-8000:]}"
                )
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)  # a late duplicate would show up now
    finally:
        for runner in runners:
            await runner.cleanup()

    assert fault_log == [
        "kill a",
        "flushall",
        "kill b",
        "redis killed",
        "redis started",
        "flushall",
    ], fault_log
    # duplicates only as repeats of the same webhook-id, and only to matching endpoints
    received = Counter(
        (name, r.webhook_id) for name, recorder in recorders.items() for r in recorder.requests
    )
    assert set(received) == wanted, (set(received) - wanted, wanted - set(received))
    # every body as sent and signed for this endpoint
    for name, recorder in recorders.items():
        verifier = standardwebhooks.Webhook(secrets[name])
        for request in recorder.requests:
            payload = verifier.verify(request.body, request.headers)
            assert payload["type"] == events[request.webhook_id], (name, request.webhook_id)

    # the database: one succeeded delivery per wanted pair, an attempt log that agrees
    async with context.sessionmaker() as session:
        rows = (await session.scalars(select(WebhookDelivery))).all()
        attempts = (await session.scalars(select(WebhookAttempt))).all()
    names = {endpoint_id: name for name, endpoint_id in endpoint_ids.items()}
    by_pair = {(names[d.endpoint_id], d.event_id): d for d in rows}
    assert len(rows) == len(by_pair) == len(wanted), "one delivery per event and endpoint"
    assert set(by_pair) == wanted
    assert {d.status for d in rows} == {"succeeded"}
    logged: dict[str, list[WebhookAttempt]] = {}
    for item in attempts:
        logged.setdefault(item.delivery_id, []).append(item)
    last_kill = max(workers.killed_at)
    unrecorded = 0
    for pair, delivery in by_pair.items():
        log = sorted(logged.get(delivery.id, []), key=lambda a: a.number)
        # every attempt recorded once, numbered 1..n, n = the row's count
        assert [a.number for a in log] == list(range(1, delivery.attempts + 1)), (pair, log)
        # (a job that outlived its lease may log its answer after the new holder's)
        assert any(a.succeeded for a in log), (pair, log)
        # each recorded attempt is a request the receiver saw, with the answer it gave
        seen = [r for r in recorders[pair[0]].requests if r.webhook_id == pair[1]]
        assert Counter(a.status_code for a in log) <= Counter(r.status for r in seen), (pair, log)
        # a request not in the log belongs to a batch whose worker was killed
        missing = len(seen) - len(log)
        assert missing >= 0
        if missing:
            assert sum(r.at <= last_kill for r in seen) >= missing, (pair, seen, log)
        unrecorded += missing
    assert unrecorded <= len(workers.killed) * MAX_JOBS * BATCH_SIZE, unrecorded
    print(  # shown with -s: what the faults did
        f"seed {SEED}: {len(wanted)} deliveries, {sum(received.values())} requests, "
        f"{sum(n - 1 for n in received.values())} repeats, {unrecorded} not in the log, "
        f"{len(attempts)} attempts"
    )
    # the flaky receiver's first refusals were retried on the schedule
    flaky_retried = [d for (name, _), d in by_pair.items() if name == "flaky" and d.attempts >= 2]
    assert flaky_retried, "no retry happened"

    assert not workers.exited(), workers.exited()
    assert len(workers.killed) == 2
    output = workers.logs()
    assert "Traceback" not in output, output[-8000:]


async def _statuses(context: AppContext) -> Counter[str]:
    """Delivery rows by status (and by last error, for those not succeeded)."""
    async with context.sessionmaker() as session:
        rows = (
            await session.execute(select(WebhookDelivery.status, WebhookDelivery.last_error))
        ).all()
    return Counter(
        status if status == "succeeded" else f"{status}: {error}" for status, error in rows
    )
