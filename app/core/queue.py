"""The arq queue as the API sees it: job names, serialisation, enqueueing.

``app/`` never imports ``workers/``: it enqueues by name, and a test proves that the
worker registers exactly the names of :class:`JobName`.
"""

from __future__ import annotations

import enum
import json
import logging
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class JobName(enum.StrEnum):
    EXECUTE_RUN = "execute_run"
    DELIVER_WEBHOOKS = "deliver_webhooks"


# What a lost Redis connection raises: redis-py wraps most socket errors, not all of them.
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisError, OSError)


class RedisOutage:
    """Tells the log once that ``who`` lost Redis and once that it is back, whatever the
    number of failed attempts in between, and gives the bounded back-off between them."""

    def __init__(
        self,
        log: logging.Logger,
        who: str,
        meanwhile: str,
        *,
        first: float = 0.2,
        most: float = 5.0,
    ) -> None:
        self.log = log
        self.who = who
        self.meanwhile = meanwhile
        self.down = False
        self._first = first
        self._most = most
        self._delay = first

    def lost(self, error: BaseException) -> float:
        """Note a failure; the seconds to wait before the next attempt."""
        if not self.down:
            self.down = True
            self.log.warning(
                "%s: Redis unreachable (%s); %s until it answers again",
                self.who,
                type(error).__name__,
                self.meanwhile,
            )
            self._delay = self._first
        delay = self._delay
        self._delay = min(self._delay * 2, self._most)
        return delay

    def back(self) -> None:
        """Note a success (logged only when it ends an outage)."""
        if self.down:
            self.down = False
            self._delay = self._first
            self.log.info("%s: Redis reachable again", self.who)


def wake_channel(queue_name: str) -> str:
    """Where enqueues are announced, so idle workers start the job without polling."""
    return f"{queue_name}:wake"


def serialize_job(data: dict[str, Any]) -> bytes:
    """Jobs and results are JSON, so the queue stays readable (and is not pickle)."""
    return json.dumps(data, default=str, separators=(",", ":")).encode()


def deserialize_job(data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(data)
    return value


def connect_redis(url: str, *, queue_name: str, timeout: float = 5.0) -> ArqRedis:
    """An arq-capable Redis client; connects lazily, so a down Redis does not stop start-up."""
    pool = ConnectionPool.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=30,
    )
    return ArqRedis(
        pool_or_conn=pool,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        default_queue_name=queue_name,
    )


class Queue:
    """Enqueues jobs by name on the configured arq queue."""

    def __init__(self, redis: ArqRedis, queue_name: str) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.outage = RedisOutage(
            logger, "queue", "runs stay queued in the database (the reconciler enqueues them)"
        )

    async def enqueue(self, job: JobName, *args: Any, job_id: str) -> bool:
        """Enqueue ``job``; False when arq refused the id (it still knows that job) or
        Redis is unreachable (the run stays queued in the database, and the reconciler
        enqueues it again once Redis answers)."""
        try:
            enqueued = await self.redis.enqueue_job(
                job.value, *args, _job_id=job_id, _queue_name=self.queue_name
            )
        except REDIS_DOWN as exc:
            self.outage.lost(exc)
            return False
        self.outage.back()
        if enqueued is None:
            logger.info("arq already knows job %s; not enqueued again", job_id)
            return False
        try:
            await self.redis.publish(wake_channel(self.queue_name), job_id)
        except RedisError:  # the workers' next poll finds it
            logger.debug("could not announce job %s", job_id)
        return True
