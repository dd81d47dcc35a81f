"""Waking waiters when a run changes, without polling the database in a loop.

Every committed change of a run publishes its id on one Redis channel. Each process
keeps one subscription and wakes the local waiters of that run. If Redis is unreachable
the waiters still wake up on their own timeouts, which back off (bounded), so waiting
is slower but never stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class RunNotifier:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.channel = f"{prefix}:run-changed"
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None

    async def publish(self, run_id: str) -> None:
        try:
            await self.redis.publish(self.channel, run_id)
        except RedisError:
            logger.warning("could not announce a change of run %s", run_id)

    async def wait(self, run_id: str, seconds: float) -> bool:
        """Until ``run_id`` changes (True) or ``seconds`` pass (False)."""
        self._ensure_listener()
        event = asyncio.Event()
        self._waiters[run_id].add(event)
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[run_id]

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="run-notifier")

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    backoff = 0.5
                    async for message in pubsub.listen():
                        run_id = message.get("data")
                        if isinstance(run_id, bytes):
                            run_id = run_id.decode()
                        for event in list(self._waiters.get(str(run_id), ())):
                            event.set()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                logger.warning("run notifications unavailable; retrying in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
