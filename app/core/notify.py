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
from collections.abc import Iterator

from redis.asyncio import Redis

from app.core.queue import REDIS_DOWN, RedisOutage

logger = logging.getLogger(__name__)


class RunNotifier:
    def __init__(self, redis: Redis, prefix: str, subscriber: Redis) -> None:
        self.redis = redis
        # Its own connection without a read timeout: an idle subscription is normal.
        self.subscriber = subscriber
        self.channel = f"{prefix}:run-changed"
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._publishing = RedisOutage(logger, "run notifier", "run changes are not announced")
        self._listening = RedisOutage(
            logger, "run listener", "waiters of runs wake up on their own timeouts"
        )

    async def publish(self, run_id: str) -> None:
        try:
            await self.redis.publish(self.channel, run_id)
        except REDIS_DOWN as exc:
            self._publishing.lost(exc)
        else:
            self._publishing.back()

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``run_id`` changes while the block runs.

        Register first, then read the run, then wait on the event (clearing it before
        each read): a change committed between the read and the wait is not lost.
        """
        self._ensure_listener()
        event = asyncio.Event()
        self._waiters[run_id].add(event)
        try:
            yield event
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
        while True:
            try:
                async with self.subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._listening.back()
                    self._wake_all()  # changes may have been missed while unsubscribed
                    async for message in pubsub.listen():
                        run_id = message.get("data")
                        if isinstance(run_id, bytes):
                            run_id = run_id.decode()
                        for event in list(self._waiters.get(str(run_id), ())):
                            event.set()
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                await asyncio.sleep(self._listening.lost(exc))

    def _wake_all(self) -> None:
        for events in list(self._waiters.values()):
            for event in list(events):
                event.set()

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        await self.subscriber.aclose()


async def wait_for(event: asyncio.Event, seconds: float) -> bool:
    """Until ``event`` is set (True) or ``seconds`` pass (False)."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
