"""Fixed-window counters in Redis, shared by every API replica."""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis

from app.core.queue import REDIS_DOWN, RedisOutage

logger = logging.getLogger(__name__)
WINDOW_SECONDS = 60
# One per process: a limiter is made per request, an outage is logged once per process.
_OUTAGE = RedisOutage(logger, "rate limiter", "requests are not limited")


class RateLimiter:
    """Counts events per key per minute. When Redis is unreachable it allows (and logs):
    the database, not Redis, decides who is authenticated, and /ready reports Redis."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.outage = _OUTAGE

    def _key(self, name: str) -> tuple[str, int]:
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
        return f"{self.prefix}:rate:{name}:{window}", retry_after

    async def hit(self, name: str) -> tuple[int, int]:
        """Count one event; returns the new count and seconds until the window ends."""
        key, retry_after = self._key(name)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, WINDOW_SECONDS * 2)
                count, _ = await pipe.execute()
        except REDIS_DOWN as exc:
            self.outage.lost(exc)
            return 0, retry_after
        self.outage.back()
        return int(count), retry_after
