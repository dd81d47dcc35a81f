"""Fixtures of the webhook tests: a real HTTP receiver on 127.0.0.1 that records every
request and answers as told, and a context plus a real arq worker with a shortened
retry schedule (the same code path, seconds instead of hours)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from app.auth.roles import Role
from app.bootstrap import build_context
from app.core.context import AppContext
from app.core.settings import Settings, WebhookSettings
from tests.factories import IssuedToken, issue_token


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """Answers with ``statuses`` in turn (the last one repeats), and records requests."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=lambda: [200])
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, *statuses: int, **headers: str) -> None:
        self.statuses = list(statuses)
        self.headers = dict(headers)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(dict(request.headers.items()), await request.read()))
        self.arrived.set()
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        headers = dict(self.headers)
        if 300 <= status < 400:
            headers.setdefault("Location", "http://127.0.0.1:9/elsewhere")
        return web.Response(status=status, body=self.body, headers=headers)

    async def wait_for(self, count: int, within: float = 20) -> list[Received]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.received) < count:
            remaining = deadline - loop.time()
            assert remaining > 0, f"received {len(self.received)} of {count} requests"
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), min(remaining, 0.5))
        return self.received


async def start_receiver(receiver: Receiver, path: str = "/hook") -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}{path}"
    return runner


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    runner = await start_receiver(found)
    yield found
    await runner.cleanup()


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


FAST = WebhookSettings(
    allowed_networks=["127.0.0.1/32"],
    allow_http=True,
    retry_schedule_seconds=[0, 0.3, 0.6, 0.9],
    jitter=0.1,
    dispatch_interval_seconds=0.05,
    lease_seconds=5,
)


def fast_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"webhooks": FAST.model_copy(update=changes)})


@pytest.fixture
async def fast(settings: Settings) -> AsyncIterator[Callable[..., Settings]]:
    """Settings with the shortened schedule (keyword arguments change more of it)."""
    return lambda **changes: fast_settings(settings, **changes)


@pytest.fixture
async def fast_worker(settings: Settings) -> AsyncIterator[AppContext]:
    """A real arq worker (with its dispatcher) on the shortened schedule; yields a context
    on the same settings."""
    from workers.main import create_worker, stop_worker

    quick = fast_settings(settings)
    worker = create_worker(quick, handle_signals=False, poll_delay=0.02)
    task = asyncio.create_task(worker.main())
    context = build_context(quick)
    yield context
    await stop_worker(worker, task)
    await context.aclose()


async def create_webhook(
    client: httpx.AsyncClient, token: IssuedToken, **body: Any
) -> dict[str, Any]:
    response = await client.post("/v1/webhooks", json=body, headers=token.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
