"""The application context shared by the API process, the worker process and the
command line: settings, engines, clients, the registry of what the domains contribute,
and their long-lived resources. It is built by the composition root,
:func:`app.bootstrap.build_context`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.db import SharedTransaction, UnitOfWork
from app.core.metrics import Metrics
from app.core.notify import RunNotifier
from app.core.queue import Queue
from app.core.registry import Registry
from app.core.resources import Resources
from app.core.settings import Settings

if TYPE_CHECKING:
    import httpx


class HttpClient:
    """The context's outgoing HTTP client (smoke tests, verification queries, load
    probes), built with ``options`` at its first use: httpx, and the command-line
    libraries it imports (rich, click, pygments), stay out of a process that never sends
    a request (an idle worker, an API process). One per context; ``dataclasses.replace``
    of a context shares it, as it shares the context's other clients."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    def get(self) -> httpx.AsyncClient:
        if self._client is None:
            if self._closed:
                raise RuntimeError("the application context was closed")
            import httpx

            self._client = httpx.AsyncClient(**self._options)
        return self._client

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.aclose()


class RedisNotConfigured(RuntimeError):
    """No FORMULA_OPS_REDIS_URL and no embedded Redis (only ``serve`` starts one)."""


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    write_sessionmaker: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    queue: Queue
    http_client: HttpClient
    notifier: RunNotifier
    secret_key: bytes  # server-side secret (app.core.secret_key)
    registry: Registry  # frozen: the run kinds, step actions and drivers (app.bootstrap)
    metrics: Metrics = field(default_factory=Metrics)
    resources: Resources = field(default_factory=Resources)

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared outgoing HTTP client (:class:`HttpClient`)."""
        return self.http_client.get()

    def unit_of_work(self, shared: SharedTransaction | None = None) -> UnitOfWork:
        """A new transaction that may write; enter it with ``async with``. With ``shared``
        (a request's :class:`SharedTransaction`), it continues that transaction."""
        return UnitOfWork(
            self.write_sessionmaker, shared=shared, read_sessionmaker=self.sessionmaker
        )

    async def check_database(self) -> dict[str, Any]:
        return await _timed(self._ping_database(), self.settings.ready_timeout_seconds)

    async def check_redis(self) -> dict[str, Any]:
        return await _timed(self.redis.ping(), self.settings.ready_timeout_seconds)

    async def _ping_database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.resources.aclose()
        await self.notifier.aclose()
        await self.http_client.aclose()
        await self.redis.aclose(close_connection_pool=True)
        await self.engine.dispose()


async def _timed(check: Any, limit: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            await check
    except Exception as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        return {"status": "unavailable", "error": reason}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
