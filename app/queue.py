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

    async def enqueue(self, job: JobName, *args: Any, job_id: str) -> bool:
        """Enqueue ``job``; False when arq refused the id (it still knows that job)."""
        enqueued = await self.redis.enqueue_job(
            job.value, *args, _job_id=job_id, _queue_name=self.queue_name
        )
        if enqueued is None:
            logger.info("arq already knows job %s; not enqueued again", job_id)
            return False
        try:
            await self.redis.publish(wake_channel(self.queue_name), job_id)
        except RedisError:  # the workers' next poll finds it
            logger.debug("could not announce job %s", job_id)
        return True
