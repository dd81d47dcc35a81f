"""The five actions as the steps of one run, executed by a real arq worker whose
settings allow the test's folders: what each step stored, the file it deleted, the
event it wrote."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from app.auth.roles import Role
from app.core.context import AppContext
from app.core.settings import Settings
from app.embedded.redis import EmbeddedRedis
from app.outbox.models import OutboxEvent
from app.runbooks.actions.security import SUSPICIOUS_ACTIVITY
from app.runs import service as run_service
from app.runs.models import RunKind
from app.runs.service import StepSpec
from tests.factories import issue_token
from tests.helpers import run_worker_burst
from tests.runbook_actions.helpers import add_environment

SECRET = "n0tForTheEvent99"


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def health_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health"
    server.shutdown()


@pytest.fixture(scope="module")
def app_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("app-redis")))
    url = server.start()
    yield url
    server.stop()


async def test_a_run_of_every_action(
    context: AppContext,
    settings: Settings,
    tmp_path: Path,
    health_url: str,
    app_redis: str,
) -> None:
    logs, old = tmp_path / "logs", tmp_path / "old"
    logs.mkdir()
    old.mkdir()
    line = (
        '203.0.113.7 - - [03/Dec/2026:06:01:02 +0000] "POST /login?token='
        f'{SECRET} HTTP/1.1" 401 0 "-" "-"\n'
    )
    (logs / "access.log").write_text(line * 6)
    for name, days in (("stale.log", 45), ("recent.log", 2)):
        (old / name).write_text("x" * 64)
        when = time.time() - days * 86400
        os.utime(old / name, (when, when))
    client = Redis.from_url(app_redis)
    try:
        await client.flushall()
        await client.config_resetstat()
        await client.set("k", "v")
        for key in ("k", "k", "k", "absent"):
            await client.get(key)
    finally:
        await client.aclose()
    await add_environment(context, redis_url=app_redis, health_url=health_url)
    await issue_token(context, Role.ADMIN, name="bootstrap", no_expiry=True)

    cleanup = {"paths": [str(old)], "pattern": "*.log", "older_than_days": 30}
    steps = [
        StepSpec(
            "suspicious activity",
            "security_log_scan",
            {"environment": "prod", "paths": [str(logs)], "threshold": 5, "since_minutes": None},
        ),
        StepSpec("old logs, dry run", "file_cleanup", cleanup),
        StepSpec("old logs", "file_cleanup", {**cleanup, "dry_run": False}),
        StepSpec("cache", "redis_info", {"environment": "prod"}),
        StepSpec("load", "load_probe", {"environment": "prod", "service": "api", "requests": 20}),
        StepSpec("access", "access_review", {"unused_days": 30}),
    ]
    async with context.unit_of_work() as uow:
        run = await run_service.create_run(
            uow, context, kind=RunKind.PLAYBOOK, steps=steps, requested_by="tests"
        )
    allowed = settings.runbooks.model_copy(
        update={"log_paths": [str(logs)], "cleanup_paths": [str(old)]}
    )
    assert await run_worker_burst(settings.model_copy(update={"runbooks": allowed})) >= 1

    async with context.sessionmaker() as session:
        done = await run_service.get_run(session, run.id, None)
        [event] = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type == SUSPICIOUS_ACTIVITY)
        )
    results = {s.name: (s.status, s.level, s.result or {}) for s in done.steps}
    assert done.status == "success", results
    scan = results["suspicious activity"]
    assert scan[:2] == ("success", "warning")
    assert scan[2]["suspicious"] == ["203.0.113.7"]
    assert SECRET not in str(scan[2])
    assert event.data["run_id"] == run.id
    assert event.data["failures"] == 6
    assert SECRET not in str(event.data)

    dry, real = results["old logs, dry run"][2], results["old logs"][2]
    assert (dry["matched"], dry["deleted"], real["deleted"]) == (1, 0, 1)
    assert sorted(os.listdir(old)) == ["recent.log"]

    cache = results["cache"]
    assert cache[:2] == ("success", "warning")  # 3 hits of 4: 75 % < 80 %
    assert cache[2]["hit_rate_percent"] == 75.0

    load = results["load"]
    assert load[:2] == ("success", "ok")
    assert load[2]["completed"] == 20

    access = results["access"]
    assert access[:2] == ("success", "warning")
    assert access[2]["findings"][0]["findings"] == ["admin", "no_expiry"]
