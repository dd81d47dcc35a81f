"""The daily health check's probes: step actions registered by
:mod:`app.health_checks.registration` (``disk``, ``memory``, ``log_errors``,
``database``, ``redis``, ``backup_age``; services are probed by the built-in ``http``
action)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from app.backups.ages import backup_ages
from app.core.db import utcnow
from app.health_checks.thresholds import (
    BACKUP_AGE,
    BACKUP_VERIFIED_AGE,
    DEFAULT_LEVELS,
    DISK,
    MEMORY,
)
from app.runs.actions import Params, StepContext, StepOutcome, bounded, level_outcome, worst
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


class BackupAgeParams(Params):
    """Levels in hours; null: no such level. The daily health check passes the
    ``backup_age`` and ``backup_verified_age`` thresholds'."""

    warning_hours: float | None = DEFAULT_LEVELS[BACKUP_AGE].warning
    critical_hours: float | None = DEFAULT_LEVELS[BACKUP_AGE].critical
    verified_warning_hours: float | None = DEFAULT_LEVELS[BACKUP_VERIFIED_AGE].warning
    verified_critical_hours: float | None = DEFAULT_LEVELS[BACKUP_VERIFIED_AGE].critical


def _hours(now: dt.datetime, then: dt.datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds() / 3600, 1)


async def backup_age(params: BackupAgeParams, ctx: StepContext) -> StepOutcome:
    """For every database backed up (each environment's with a ``database_url``, and the
    control plane's own when the schedule takes it): hours since its newest successful
    backup and since its newest verified one, graded by the thresholds. None yet (a new
    target) is a warning, not critical: the first scheduled backup and drill come."""
    async with ctx.context.unit_of_work() as uow:
        ages = await backup_ages(uow.session, ctx.context.settings.backups.backup_self)
    if not ages:
        return StepOutcome(StepStatus.SKIPPED, "no database to back up", data={"targets": []})
    now = utcnow()
    overall, lines, targets = Level.OK, [], []
    for age in ages:
        hours = _hours(now, age.newest_at)
        verified_hours = _hours(now, age.verified_at)
        if hours is None:  # a new target (a first daily backup comes)
            level = Level.WARNING
            line = f"{age.target}: no successful backup yet"
        else:
            level = _level(hours, params.warning_hours, params.critical_hours)
            line = f"{age.target}: newest backup {hours} h old"
            if verified_hours is None:
                level = worst(level, Level.WARNING)
                line += ", none verified yet"
            else:
                level = worst(
                    level,
                    _level(
                        verified_hours,
                        params.verified_warning_hours,
                        params.verified_critical_hours,
                    ),
                )
                line += f", newest verified {verified_hours} h old"
        overall = worst(overall, level)
        lines.append(f"{line} ({level})")
        targets.append(
            {
                "target": age.target,
                "newest_backup_id": age.newest_id,
                "age_hours": hours,
                "verified_backup_id": age.verified_id,
                "verified_age_hours": verified_hours,
                "level": level.value,
            }
        )
    return level_outcome(overall, "\n".join(lines), {"targets": targets})
