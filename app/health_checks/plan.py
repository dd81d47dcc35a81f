"""The daily health check's plan and how its probes sum up.

From the runbook: every service's health URL (response time), disk usage, memory, recent
error lines in the logs, the age of the newest backup, PostgreSQL and Redis
reachability. The levels of response time, disk and memory are the thresholds table's
(``latency_p95``, ``disk``, ``memory``: by default > 1 s warning, > 2 s critical;
> 80 % warning, > 95 % critical; > 85 % warning), passed to each probe as its step
parameters. Every probe runs even when another fails; the run fails when any probe is
critical.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.core.settings import Settings
from app.health_checks.thresholds import (
    BACKUP_AGE,
    BACKUP_VERIFIED_AGE,
    DEFAULT_LEVELS,
    DISK,
    LATENCY,
    MEMORY,
    Levels,
)
from app.runs.actions import worst
from app.runs.kinds import Ending, Summary
from app.runs.models import Level, RunStatus, Step, StepStatus
from app.runs.service import StepSpec

PROBE_TIMEOUT = 30.0


def self_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}/health"


def plan(
    settings: Settings,
    deployed: list[tuple[str, str]] | None = None,
    levels: Mapping[str, Levels] = DEFAULT_LEVELS,
) -> list[StepSpec]:
    """``deployed``: (``environment/service``, health URL) of the environments' services,
    probed beside the configured ones; with neither, the control plane probes itself.
    ``levels``: by threshold name (:func:`app.health_checks.thresholds.levels`)."""
    config = settings.health_check
    services = [(s.name, s.url) for s in config.services] + list(deployed or [])
    services = services or [("formula-ops", self_url(settings))]
    latency, disk, memory = levels[LATENCY], levels[DISK], levels[MEMORY]
    backup, verified = levels[BACKUP_AGE], levels[BACKUP_VERIFIED_AGE]
    steps = [
        StepSpec(
            f"service {name}",
            "http",
            {"url": url, "warning_ms": latency.warning, "critical_ms": latency.critical},
            timeout_seconds=PROBE_TIMEOUT,
        )
        for name, url in services
    ]
    steps += [
        StepSpec(
            f"disk {path}",
            "disk",
            {"path": path, "warning_percent": disk.warning, "critical_percent": disk.critical},
            timeout_seconds=PROBE_TIMEOUT,
        )
        for path in config.disk_paths
    ]
    steps.append(
        StepSpec(
            "memory",
            "memory",
            {"warning_percent": memory.warning, "critical_percent": memory.critical},
            timeout_seconds=PROBE_TIMEOUT,
        )
    )
    if config.log_files:
        steps.append(
            StepSpec(
                "recent errors in logs",
                "log_errors",
                {"files": config.log_files},
                timeout_seconds=PROBE_TIMEOUT,
            )
        )
    steps += [
        StepSpec(
            "newest backup",
            "backup_age",
            {
                "warning_hours": backup.warning,
                "critical_hours": backup.critical,
                "verified_warning_hours": verified.warning,
                "verified_critical_hours": verified.critical,
            },
            timeout_seconds=PROBE_TIMEOUT,
        ),
        StepSpec("database", "database", {}, timeout_seconds=PROBE_TIMEOUT),
        StepSpec("redis", "redis", {}, timeout_seconds=PROBE_TIMEOUT),
    ]
    return [
        StepSpec(s.name, s.action, s.params, True, s.timeout_seconds, stop_on_failure=False)
        for s in steps
    ]


def finalize(steps: list[Step], ending: Ending) -> Summary:
    levels = {s.name: Level(s.level) for s in steps if s.level}
    failed = [s for s in steps if s.status == StepStatus.FAILURE]
    overall = worst(Level.OK, *levels.values())
    if failed and overall != Level.CRITICAL:
        overall = Level.CRITICAL  # a probe that could not run at all is critical
    result = {
        "overall": overall.value,
        "levels": {name: level.value for name, level in levels.items()},
        "critical": [
            s.name for s in steps if s.level == Level.CRITICAL or s.status == StepStatus.FAILURE
        ],
        "warning": [s.name for s in steps if s.level == Level.WARNING],
        "skipped": [s.name for s in steps if s.status == StepStatus.SKIPPED],
    }
    if overall == Level.CRITICAL:
        names = ", ".join(result["critical"])
        return RunStatus.FAILURE, "/problems/health-check-failed", f"critical: {names}", result
    return RunStatus.SUCCESS, None, None, result
