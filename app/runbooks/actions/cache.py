"""``redis_info``: the runbook's Cache Performance check of an environment's Redis.

The runbook reads ``redis-cli info stats`` and ``redis-cli info memory``; here the
environment's ``redis_url`` is asked for ``INFO stats``, ``INFO memory`` and
``INFO clients``, and the hit rate (``keyspace_hits / (hits + misses)``) is graded: below
``warning_percent`` a warning, below ``critical_percent`` critical; a Redis that has
served no lookup yet has no hit rate (no level). The URL's password never appears in
what the step reports, nor in its errors.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.redaction import Scrubber, redact_text
from app.core.registry import Registry
from app.environments.models import Environment
from app.environments.schemas import NAME
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome, level_outcome
from app.runs.models import Level, StepStatus


class RedisInfoParams(Params):
    environment: str = Field(pattern=NAME, description="Whose `redis_url` is read.")
    warning_percent: float = Field(
        default=80, ge=0, le=100, description="A hit rate below this is a warning."
    )
    critical_percent: float = Field(
        default=50, ge=0, le=100, description="A hit rate below this is critical."
    )
    timeout_seconds: float = Field(default=5, gt=0, le=60)

    @model_validator(mode="after")
    def _ordered(self) -> RedisInfoParams:
        if self.critical_percent > self.warning_percent:
            raise ValueError("critical_percent must not be above warning_percent")
        return self


def _int(info: dict[str, Any], key: str) -> int | None:
    value = info.get(key)
    return int(value) if isinstance(value, int | float | str) and str(value).isdigit() else None


def hit_rate(hits: int, misses: int) -> float | None:
    """Percent of lookups that found their key; None: no lookup yet."""
    lookups = hits + misses
    return round(hits / lookups * 100, 1) if lookups else None


def grade(rate: float | None, params: RedisInfoParams) -> Level | None:
    if rate is None:
        return None
    if rate < params.critical_percent:
        return Level.CRITICAL
    if rate < params.warning_percent:
        return Level.WARNING
    return Level.OK


async def read_info(url: str, seconds: float) -> dict[str, Any]:
    """``INFO stats``, ``INFO memory`` and ``INFO clients`` of the Redis at ``url``."""
    client = Redis.from_url(url, socket_connect_timeout=seconds, socket_timeout=seconds)
    try:
        info: dict[str, Any] = {}
        for section in ("stats", "memory", "clients"):
            info.update(await client.info(section))
        return info
    finally:
        await client.aclose()


async def redis_info(params: RedisInfoParams, ctx: StepContext) -> StepOutcome:
    async with ctx.context.sessionmaker() as session:
        environment = await session.get(Environment, params.environment)
    if environment is None:
        return StepOutcome(StepStatus.FAILURE, error=f"no environment {params.environment!r}")
    url = environment.redis_url
    if not url:
        return StepOutcome(
            StepStatus.SKIPPED,
            f"{params.environment} has no redis_url",
            data={"summary": f"{params.environment}: no Redis configured"},
        )
    shown = redact_text(url)
    try:
        info = await read_info(url, params.timeout_seconds)
    except (RedisError, OSError, ValueError) as exc:
        # The message may repeat the URL: everything of its userinfo is scrubbed.
        reason = Scrubber.of({"url": url}).text(f"{type(exc).__name__}: {exc}")[:500]
        return StepOutcome(
            StepStatus.FAILURE,
            level=Level.CRITICAL,
            data={"summary": f"{params.environment}: Redis unreachable", "redis": shown},
            error=f"Redis of {params.environment} ({shown}) unreachable: {reason}",
        )
    hits, misses = _int(info, "keyspace_hits") or 0, _int(info, "keyspace_misses") or 0
    rate = hit_rate(hits, misses)
    level = grade(rate, params)
    data: dict[str, Any] = {
        "redis": shown,
        "keyspace_hits": hits,
        "keyspace_misses": misses,
        "hit_rate_percent": rate,
        "evicted_keys": _int(info, "evicted_keys"),
        "expired_keys": _int(info, "expired_keys"),
        "used_memory": _int(info, "used_memory"),
        "used_memory_human": info.get("used_memory_human"),
        "used_memory_peak_human": info.get("used_memory_peak_human"),
        "maxmemory": _int(info, "maxmemory"),
        "maxmemory_human": info.get("maxmemory_human"),
        "maxmemory_policy": info.get("maxmemory_policy"),
        "connected_clients": _int(info, "connected_clients"),
        "warning_percent": params.warning_percent,
        "critical_percent": params.critical_percent,
    }
    rate_text = "no lookups yet" if rate is None else f"hit rate {rate:g} %"
    memory = f"{data['used_memory_human']} used"
    if data["maxmemory"]:
        memory += f" of {data['maxmemory_human']}"
    summary = (
        f"{params.environment} Redis: {rate_text} ({hits} hits, {misses} misses), {memory}, "
        f"{data['evicted_keys']} evicted, {data['connected_clients']} client(s)"
    )
    data["summary"] = summary
    if level is None:
        return StepOutcome(StepStatus.SUCCESS, summary, None, data)
    return level_outcome(level, summary, data)


def register(registry: Registry) -> None:
    registry[ACTIONS].add("redis_info", Action(RedisInfoParams, redis_info, idempotent=True))
