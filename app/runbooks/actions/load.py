"""``load_probe``: the runbook's "run performance test" (``k6 run --duration=2m --vus=10``)
made small and bounded: ``requests`` GETs of a service's health URL, ``concurrency`` at a
time, for at most ``max_seconds``.

The target is named (environment and service); its URL comes from the service's row,
never from the caller. The p95 latency and the error rate are graded by the thresholds
table (``latency_p95``, ``error_rate``), or by the runbook's numbers where a row is
missing (p95 above 1 s a warning, above 2 s critical; errors above 1 % a warning, above
5 % critical). An error is a request without an answer or answered 4xx/5xx (a health URL
has no legitimate 4xx). Memory holds one number per request; bodies are read and
dropped (at most :data:`BODY_BYTES` each).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import Field
from sqlalchemy import select

from app.core.redaction import redact_text
from app.core.registry import Registry
from app.environments.models import Service
from app.environments.schemas import NAME
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome, level_outcome, worst
from app.runs.models import Level, StepStatus
from app.thresholds import service as threshold_service
from app.thresholds.defaults import RUNBOOK

if TYPE_CHECKING:
    import httpx

LATENCY = "latency_p95"
ERROR_RATE = "error_rate"
BODY_BYTES = 1024 * 1024
REQUEST_TIMEOUT = 10.0
_DEFAULTS = {row["name"]: (row["warning"], row["critical"]) for row in RUNBOOK}


class LoadProbeParams(Params):
    environment: str = Field(pattern=NAME)
    service: str = Field(pattern=NAME, description="Its `health_url` is the target.")
    requests: int = Field(default=100, ge=1, le=1000)
    concurrency: int = Field(default=5, ge=1, le=20)
    max_seconds: float = Field(default=30, gt=0, le=120, description="The probe stops then.")


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of ascending ``sorted_values`` (not empty)."""
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


def _grade(value: float | None, levels: tuple[float | None, float | None]) -> Level:
    warning, critical = levels
    if value is None:
        return Level.OK
    if critical is not None and value > critical:
        return Level.CRITICAL
    if warning is not None and value > warning:
        return Level.WARNING
    return Level.OK


async def _levels(ctx: StepContext) -> dict[str, tuple[float | None, float | None]]:
    """The table's levels of latency_p95 and error_rate, else the runbook's."""
    async with ctx.context.sessionmaker() as session:
        table = await threshold_service.load(session)
    return {
        name: (table[name].warning, table[name].critical) if name in table else _DEFAULTS[name]
        for name in (LATENCY, ERROR_RATE)
    }


async def _one(http: httpx.AsyncClient, url: str, seconds: float) -> tuple[float, int | None]:
    """Latency (ms, to the end of the body) and status; None: no answer."""
    import httpx  # imported by ``http`` already; here for its errors

    started = time.perf_counter()
    try:
        async with http.stream("GET", url, timeout=seconds) as response:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= BODY_BYTES:
                    break
            status: int | None = response.status_code
    except httpx.HTTPError:
        status = None
    return (time.perf_counter() - started) * 1000, status


async def load_probe(params: LoadProbeParams, ctx: StepContext) -> StepOutcome:
    async with ctx.context.sessionmaker() as session:
        service = await session.scalar(
            select(Service).where(
                Service.environment == params.environment, Service.name == params.service
            )
        )
    target = f"{params.environment}/{params.service}"
    if service is None:
        return StepOutcome(StepStatus.FAILURE, error=f"no service {target}")
    if not service.health_url:
        return StepOutcome(StepStatus.FAILURE, error=f"{target} has no health URL")
    url, shown = service.health_url, redact_text(service.health_url)
    levels = await _levels(ctx)
    timeout = min(REQUEST_TIMEOUT, params.max_seconds)
    latencies: list[float] = []  # of answered requests
    statuses: Counter[str] = Counter()
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < params.requests:
            sent += 1
            latency, status = await _one(ctx.context.http, url, timeout)
            statuses[str(status) if status is not None else "no answer"] += 1
            if status is not None:
                latencies.append(latency)

    started = time.perf_counter()
    stopped = False
    try:
        async with asyncio.timeout(params.max_seconds):
            async with asyncio.TaskGroup() as group:
                for _ in range(min(params.concurrency, params.requests)):
                    group.create_task(worker())
    except TimeoutError:
        stopped = True
    elapsed = time.perf_counter() - started
    completed = sum(statuses.values())
    errors = sum(n for s, n in statuses.items() if not (s.isdigit() and int(s) < 400))
    error_rate = round(errors / completed * 100, 2) if completed else None
    ordered = sorted(latencies)
    p50 = round(percentile(ordered, 0.50), 1) if ordered else None
    p95 = round(percentile(ordered, 0.95), 1) if ordered else None
    slowest = round(ordered[-1], 1) if ordered else None
    if completed == 0:
        level = Level.CRITICAL  # nothing finished within max_seconds
    else:
        level = worst(_grade(p95, levels[LATENCY]), _grade(error_rate, levels[ERROR_RATE]))
    data: dict[str, Any] = {
        "url": shown,
        "requests": params.requests,
        "completed": completed,
        "concurrency": params.concurrency,
        "stopped_at_max_seconds": stopped,
        "seconds": round(elapsed, 3),
        "requests_per_second": round(completed / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": {"p50": p50, "p95": p95, "max": slowest},
        "error_rate_percent": error_rate,
        "statuses": dict(statuses),
        "levels": {
            name: {"warning": warning, "critical": critical}
            for name, (warning, critical) in levels.items()
        },
    }
    summary = (
        f"{target}: {completed}/{params.requests} request(s) in {elapsed:.1f} s"
        f"{' (stopped at max_seconds)' if stopped else ''}, p50 {p50} ms, p95 {p95} ms, "
        f"max {slowest} ms, errors {error_rate} %, {data['requests_per_second']} req/s"
    )
    data["summary"] = summary
    return level_outcome(level, summary, data)


def register(registry: Registry) -> None:
    registry[ACTIONS].add("load_probe", Action(LoadProbeParams, load_probe, idempotent=True))
