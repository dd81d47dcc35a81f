"""The composition root shared by the API process and the worker process."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from arq.connections import ArqRedis
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import __version__
from app.core.db import UnitOfWork, create_engine, make_sessionmaker, write_engine
from app.core.metrics import Metrics
from app.core.notify import RunNotifier
from app.core.queue import Queue, connect_redis
from app.core.secret_key import load_secret_key
from app.core.settings import Settings


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
    http: httpx.AsyncClient
    notifier: RunNotifier
    secret_key: bytes  # server-side secret (app.core.secret_key)
    metrics: Metrics = field(default_factory=Metrics)

    def unit_of_work(self) -> UnitOfWork:
        """A new transaction that may write; enter it with ``async with``."""
        return UnitOfWork(self.write_sessionmaker)

    async def check_database(self) -> dict[str, Any]:
        return await _timed(self._ping_database(), self.settings.ready_timeout_seconds)

    async def check_redis(self) -> dict[str, Any]:
        return await _timed(self.redis.ping(), self.settings.ready_timeout_seconds)

    async def _ping_database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.notifier.aclose()
        await self.http.aclose()
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


def build_context(settings: Settings, *, metrics: Metrics | None = None) -> AppContext:
    """Engines and clients connect lazily: building a context never blocks on a server."""
    if settings.redis_url is None:
        raise RedisNotConfigured(
            "FORMULA_OPS_REDIS_URL is not set; `formula-ops serve` starts an embedded Redis, "
            "`formula-ops api` and `formula-ops worker` need a Redis URL"
        )
    engine = create_engine(settings)
    redis = connect_redis(
        settings.redis_url.get_secret_value(),
        queue_name=settings.queue_name,
        timeout=settings.ready_timeout_seconds,
    )
    return AppContext(
        settings=settings,
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        write_sessionmaker=make_sessionmaker(write_engine(engine)),
        redis=redis,
        queue=Queue(redis, settings.queue_name),
        http=httpx.AsyncClient(
            timeout=httpx.Timeout(10.0), headers={"User-Agent": f"formula-ops/{__version__}"}
        ),
        notifier=RunNotifier(
            redis,
            settings.redis_prefix,
            Redis.from_url(
                settings.redis_url.get_secret_value(),
                socket_connect_timeout=settings.ready_timeout_seconds,
                socket_timeout=None,
                health_check_interval=30,
            ),
        ),
        secret_key=load_secret_key(settings),
        metrics=metrics or Metrics(),
    )
