"""The daily health check's probes: step actions registered by
:mod:`app.health_checks.registration` (``disk``, ``memory``, ``log_errors``,
``database``, ``redis``, ``backup_age``; services are probed by the built-in ``http``
action)."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from app.health_checks.thresholds import DEFAULT_LEVELS, DISK, MEMORY
from app.runs.actions import Params, StepContext, StepOutcome, bounded, level_outcome
from app.runs.models import Level, StepStatus


class DiskParams(Params):
    """Levels in percent used; null: no such level. The daily health check passes the
    ``disk`` threshold's."""

    path: str = "/"
    warning_percent: float | None = DEFAULT_LEVELS[DISK].warning
    critical_percent: float | None = DEFAULT_LEVELS[DISK].critical


def _level(value: float, warning: float | None, critical: float | None) -> Level:
    if critical is not None and value > critical:
        return Level.CRITICAL
    if warning is not None and value > warning:
        return Level.WARNING
    return Level.OK


async def disk(params: DiskParams, ctx: StepContext) -> StepOutcome:
    try:
        usage = await asyncio.to_thread(shutil.disk_usage, params.path)
    except OSError as exc:
        return StepOutcome(StepStatus.FAILURE, level=Level.CRITICAL, error=str(exc))
    percent = round(usage.used / usage.total * 100, 1)
    level = _level(percent, params.warning_percent, params.critical_percent)
    free_gib = round(usage.free / 2**30, 1)
    return level_outcome(
        level,
        f"{params.path}: {percent} % used, {free_gib} GiB free",
        {"path": params.path, "used_percent": percent, "free_bytes": usage.free},
    )


class MemoryParams(Params):
    """Levels in percent used; null: no such level. The daily health check passes the
    ``memory`` threshold's."""

    warning_percent: float | None = DEFAULT_LEVELS[MEMORY].warning
    critical_percent: float | None = DEFAULT_LEVELS[MEMORY].critical


async def memory(params: MemoryParams, ctx: StepContext) -> StepOutcome:
    try:
        info = await asyncio.to_thread(Path("/proc/meminfo").read_text)
    except OSError as exc:
        return StepOutcome(StepStatus.SKIPPED, error=f"no /proc/meminfo: {exc}")
    values = {
        m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+)", info, re.MULTILINE)
    }
    total, available = values.get("MemTotal", 0), values.get("MemAvailable", 0)
    if not total:
        return StepOutcome(StepStatus.SKIPPED, error="MemTotal not reported")
    percent = round((total - available) / total * 100, 1)
    level = _level(percent, params.warning_percent, params.critical_percent)
    return level_outcome(
        level,
        f"memory {percent} % used",
        {"used_percent": percent, "total_kib": total, "available_kib": available},
    )


class LogScanParams(Params):
    files: list[str] = Field(min_length=1)
    pattern: str = r"\b(ERROR|FATAL|CRITICAL|Error|Exception)\b"
    window_hours: float = Field(default=24, gt=0)
    tail_bytes: int = Field(default=1024 * 1024, ge=1024)
    warning_lines: int = 1
    critical_lines: int = 100


async def log_errors(params: LogScanParams, ctx: StepContext) -> StepOutcome:
    pattern = re.compile(params.pattern)
    cutoff = time.time() - params.window_hours * 3600

    def scan() -> tuple[dict[str, int], list[str]]:
        counts: dict[str, int] = {}
        samples: list[str] = []
        for name in params.files:
            path = Path(name)
            try:
                if path.stat().st_mtime < cutoff:
                    counts[name] = 0
                    continue
                with path.open("rb") as handle:
                    handle.seek(max(0, path.stat().st_size - params.tail_bytes))
                    lines = handle.read().decode(errors="replace").splitlines()
            except OSError:
                counts[name] = -1
                continue
            hits = [line for line in lines if pattern.search(line)]
            counts[name] = len(hits)
            samples.extend(hits[-5:])
        return counts, samples

    counts, samples = await asyncio.to_thread(scan)
    total = sum(c for c in counts.values() if c > 0)
    level = (
        Level.CRITICAL
        if total >= params.critical_lines
        else Level.WARNING
        if total >= params.warning_lines
        else Level.OK
    )
    output, _ = bounded("\n".join([f"{total} error line(s) in the last window", *samples]))
    return level_outcome(level, output, {"error_lines": counts})


class NoParams(Params):
    pass


def _reachability(what: str, check: dict[str, Any]) -> StepOutcome:
    if check["status"] != "ok":
        return StepOutcome(
            StepStatus.FAILURE, level=Level.CRITICAL, data=check, error=f"{what} unreachable"
        )
    return level_outcome(Level.OK, f"{what} answered in {check['latency_ms']} ms", check)


async def database(params: NoParams, ctx: StepContext) -> StepOutcome:
    return _reachability("the database", await ctx.context.check_database())


async def redis_ping(params: NoParams, ctx: StepContext) -> StepOutcome:
    return _reachability("Redis", await ctx.context.check_redis())


async def backup_age(params: NoParams, ctx: StepContext) -> StepOutcome:
    """Age of the newest backup; until the backups capability has written one, there is
    nothing to measure and the step says so."""
    async with ctx.context.engine.connect() as conn:
        has_backups = await conn.run_sync(lambda c: c.dialect.has_table(c, "backup"))
    if not has_backups:
        return StepOutcome(StepStatus.SKIPPED, "no backups exist yet", data={"backups": 0})
    return StepOutcome(StepStatus.SKIPPED, "backup ages are not measured yet")
