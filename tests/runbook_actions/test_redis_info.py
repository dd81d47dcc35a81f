"""``redis_info``: an environment's Redis graded by its hit rate. Exact rates come from a
private redis-server (the embedded one's binary), whose counters no one else moves; the
shared Redis of the machine (a database of its own) shows the real thing is read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from app.core.context import AppContext
from app.embedded.redis import EmbeddedRedis
from app.runbooks.actions.cache import RedisInfoParams, redis_info
from app.runs.models import Level, StepStatus
from tests.helpers import free_port
from tests.runbook_actions.helpers import add_environment, step_context

pytestmark = pytest.mark.one_backend("postgres")

SHARED_REDIS = "redis://127.0.0.1:6379/13"  # the machine's Redis, a database of our own
PASSWORD = "n0t-the-real-passw0rd"


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("private-redis")))
    url = server.start()
    yield url
    server.stop()


@pytest_asyncio.fixture
async def app_redis(private_redis: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(private_redis)
    await client.flushall()
    await client.config_resetstat()
    yield client
    await client.aclose()


async def lookups(client: Redis, hits: int, misses: int) -> None:
    await client.set("present", "1")
    for _ in range(hits):
        assert await client.get("present") is not None
    for _ in range(misses):
        assert await client.get("absent") is None


class TestHitRate:
    @pytest.mark.parametrize(
        ("hits", "misses", "rate", "level", "status"),
        [
            (9, 1, 90.0, Level.OK, StepStatus.SUCCESS),
            (7, 3, 70.0, Level.WARNING, StepStatus.SUCCESS),
            (1, 3, 25.0, Level.CRITICAL, StepStatus.FAILURE),
        ],
    )
    async def test_the_hit_rate_is_graded(
        self,
        context: AppContext,
        private_redis: str,
        app_redis: Redis,
        hits: int,
        misses: int,
        rate: float,
        level: Level,
        status: StepStatus,
    ) -> None:
        await add_environment(context, redis_url=private_redis)
        await lookups(app_redis, hits, misses)
        ctx, _ = step_context(context)
        outcome = await redis_info(RedisInfoParams(environment="prod"), ctx)
        assert (outcome.status, outcome.level) == (status, level)
        data = outcome.data
        assert (data["keyspace_hits"], data["keyspace_misses"]) == (hits, misses)
        assert data["hit_rate_percent"] == rate
        assert data["evicted_keys"] == 0
        assert data["connected_clients"] >= 1
        assert data["used_memory_human"].endswith(("K", "M"))
        assert data["maxmemory"] == 0
        assert f"hit rate {rate:g} %" in data["summary"]

    async def test_levels_are_parameters(
        self, context: AppContext, private_redis: str, app_redis: Redis
    ) -> None:
        await add_environment(context, redis_url=private_redis)
        await lookups(app_redis, 9, 1)
        ctx, _ = step_context(context)
        params = RedisInfoParams(environment="prod", warning_percent=95, critical_percent=91)
        outcome = await redis_info(params, ctx)
        assert outcome.level == Level.CRITICAL

    async def test_no_lookup_yet_has_no_level(
        self, context: AppContext, private_redis: str, app_redis: Redis
    ) -> None:
        await add_environment(context, redis_url=private_redis)
        ctx, _ = step_context(context)
        outcome = await redis_info(RedisInfoParams(environment="prod"), ctx)
        assert (outcome.status, outcome.level) == (StepStatus.SUCCESS, None)
        assert outcome.data["hit_rate_percent"] is None
        assert "no lookups yet" in outcome.data["summary"]

    async def test_the_shared_redis_is_read(self, context: AppContext) -> None:
        client = Redis.from_url(SHARED_REDIS)
        try:
            await client.set("formula-ops-test:redis-info", "1", ex=60)
            await client.get("formula-ops-test:redis-info")
            await client.get("formula-ops-test:absent")
        finally:
            await client.aclose()
        await add_environment(context, redis_url=SHARED_REDIS)
        ctx, _ = step_context(context)
        outcome = await redis_info(RedisInfoParams(environment="prod"), ctx)
        assert outcome.status in (StepStatus.SUCCESS, StepStatus.FAILURE)  # its own traffic
        data = outcome.data
        assert data["keyspace_hits"] >= 1
        assert data["keyspace_misses"] >= 1
        assert 0 < data["hit_rate_percent"] < 100
        assert data["redis"] == SHARED_REDIS


class TestFailures:
    async def test_an_unreachable_redis_fails_without_its_password(
        self, context: AppContext
    ) -> None:
        url = f"redis://app:{PASSWORD}@127.0.0.1:{free_port()}/0"
        await add_environment(context, redis_url=url)
        ctx, _ = step_context(context)
        outcome = await redis_info(RedisInfoParams(environment="prod", timeout_seconds=2), ctx)
        assert (outcome.status, outcome.level) == (StepStatus.FAILURE, Level.CRITICAL)
        assert "unreachable" in (outcome.error or "")
        assert PASSWORD not in (outcome.error or "") + json.dumps(outcome.data)
        assert "[redacted]@127.0.0.1" in (outcome.error or "")

    async def test_a_refused_password_is_not_shown(self, context: AppContext) -> None:
        url = f"redis://app:{PASSWORD}@127.0.0.1:6379/13"
        await add_environment(context, redis_url=url)
        ctx, _ = step_context(context)
        outcome = await redis_info(RedisInfoParams(environment="prod"), ctx)
        assert outcome.status == StepStatus.FAILURE
        assert "AuthenticationError" in (outcome.error or "")
        assert PASSWORD not in (outcome.error or "") + outcome.output + json.dumps(outcome.data)

    async def test_an_environment_without_redis_is_skipped(self, context: AppContext) -> None:
        await add_environment(context)
        ctx, _ = step_context(context)
        outcome = await redis_info(RedisInfoParams(environment="prod"), ctx)
        assert outcome.status == StepStatus.SKIPPED

    async def test_an_unknown_environment_fails(self, context: AppContext) -> None:
        ctx, _ = step_context(context)
        outcome = await redis_info(RedisInfoParams(environment="nowhere"), ctx)
        assert outcome.status == StepStatus.FAILURE

    def test_critical_must_not_be_above_warning(self) -> None:
        with pytest.raises(ValueError, match="critical_percent"):
            RedisInfoParams(environment="prod", warning_percent=50, critical_percent=80)
