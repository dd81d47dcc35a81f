"""A worker that starts a job as soon as it is enqueued instead of at its next poll.

arq polls its queue every ``poll_delay`` seconds, so a job waits half of that on average
(about 25 ms at 0.05 s). The API publishes a wake-up on ``<queue>:wake`` after every
enqueue (:meth:`app.queue.Queue.enqueue`); this worker waits for it between polls, with
``poll_delay`` as the upper bound, so nothing depends on the message arriving: a lost
wake-up only costs one poll delay. Burst mode (tests) keeps arq's own loop.

Every wake-up makes each worker read the head of the queue, where the jobs that workers
are running stay until they end; arq checks each id it read with a transaction of its
own (WATCH, EXISTS, ZSCORE). :meth:`WakeableWorker.start_jobs` first drops the ids this
worker runs and, in one pipelined round trip, those another worker has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq.connections import log_redis_info
from arq.constants import in_progress_key_prefix
from arq.worker import Worker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.queue import wake_channel

logger = logging.getLogger(__name__)


class WakeableWorker(Worker):
    def __init__(self, *args: Any, subscriber: Redis, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriber = subscriber
        self._wake = asyncio.Event()

    async def main(self) -> None:
        if self.burst or self._pool is None:
            await super().main()
            return
        logger.info(
            "Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions)
        )
        await log_redis_info(self.pool, logger.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = asyncio.create_task(self._listen(), name="worker-wake")
        try:
            while True:
                self._wake.clear()
                await self._poll_iteration()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_delay_s):
                        await self._wake.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        candidates = [job_id for job_id in job_ids if job_id.decode() not in self.tasks]
        if len(candidates) > 1:
            async with self.pool.pipeline(transaction=False) as pipe:
                for job_id in candidates:
                    pipe.exists(in_progress_key_prefix + job_id.decode())
                started = await pipe.execute()
            candidates = [
                job_id for job_id, taken in zip(candidates, started, strict=True) if not taken
            ]
        await super().start_jobs(candidates)

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with self._subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(wake_channel(self.queue_name))
                    backoff = 0.5
                    async for _ in pubsub.listen():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                logger.warning("wake-ups unavailable; polling every %s s", self.poll_delay_s)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(Exception):
            await self._subscriber.aclose()
