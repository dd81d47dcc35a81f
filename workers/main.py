"""The arq worker: registered functions, periodic jobs, hooks, and how it connects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from arq.cron import CronJob, cron
from arq.worker import Worker, func
from redis.asyncio import Redis

from app.core.metrics import Metrics
from app.core.queue import JobName, connect_redis, deserialize_job, serialize_job
from app.core.registry import Registry
from app.core.settings import Settings, get_settings
from workers.backups import (
    backup_janitor,
    backup_retention,
    scheduled_backups,
    scheduled_drills,
)
from workers.cron import (
    purge_idempotency_keys,
    purge_webhook_history,
    reconcile_runs,
    reconcile_timeout,
    scheduled_health_check,
)
from workers.incidents import check_incident_clocks
from workers.maintenances import schedule_maintenances
from workers.runs import execute_run
from workers.schedules import fire_schedules
from workers.state import shutdown, startup
from workers.wake import WakeableWorker
from workers.webhooks import deliver_webhooks

FUNCTIONS = [
    func(execute_run, name=JobName.EXECUTE_RUN.value),  # type: ignore[arg-type]
    # No result kept: a batch's job id may come back (a lease expired, Redis flushed).
    func(deliver_webhooks, name=JobName.DELIVER_WEBHOOKS.value, keep_result=0),  # type: ignore[arg-type]
]


def cron_jobs(settings: Settings) -> list[CronJob]:
    """Periodic jobs; ``unique`` makes each run on one worker at a time."""
    every = settings.reconcile_every_seconds
    jobs = [
        cron(
            reconcile_runs,  # type: ignore[arg-type]
            second=set(range(0, 60, every)),
            unique=True,
            run_at_startup=True,
            timeout=reconcile_timeout(settings),
        ),
        cron(purge_idempotency_keys, minute=17, unique=True, run_at_startup=False),  # type: ignore[arg-type]
        cron(purge_webhook_history, hour=3, minute=41, unique=True, run_at_startup=False),  # type: ignore[arg-type]
        cron(check_incident_clocks, second={0, 30}, unique=True, run_at_startup=False, timeout=60),  # type: ignore[arg-type]
    ]
    maintenances = settings.maintenances
    if maintenances.schedule_enabled:
        jobs.append(
            cron(
                schedule_maintenances,  # type: ignore[arg-type]
                second=set(range(0, 60, maintenances.schedule_every_seconds)),
                unique=True,
                run_at_startup=True,
                timeout=max(maintenances.schedule_every_seconds * 4, 30),
            )
        )
    schedules = settings.schedules
    if schedules.fire_enabled:
        jobs.append(
            cron(
                fire_schedules,  # type: ignore[arg-type]
                second=set(range(0, 60, schedules.fire_every_seconds)),
                unique=True,
                run_at_startup=True,
                timeout=max(schedules.fire_every_seconds * 4, 30),
            )
        )
    backups = settings.backups
    jobs.append(
        cron(backup_janitor, second=7, unique=True, run_at_startup=False, timeout=600)  # type: ignore[arg-type]
    )
    jobs.append(
        cron(
            backup_retention,  # type: ignore[arg-type]
            name="daily_backup_retention",
            hour=backups.retention_hour,
            minute=7,
            second=0,
            unique=True,
        )
    )
    if backups.schedule_enabled:
        jobs.append(
            cron(
                scheduled_backups,  # type: ignore[arg-type]
                name="daily_backup",
                hour=backups.schedule_hour,
                minute=backups.schedule_minute,
                second=0,
                unique=True,
            )
        )
        jobs.append(
            cron(
                scheduled_drills,  # type: ignore[arg-type]
                name="weekly_backup_drill",
                weekday=backups.drill_weekday,
                hour=backups.drill_hour,
                minute=0,
                second=0,
                unique=True,
            )
        )
    schedule = settings.health_check
    if schedule.schedule_enabled:
        jobs.append(
            cron(
                scheduled_health_check,  # type: ignore[arg-type]
                name="daily_health_check",
                hour=schedule.schedule_hour,
                minute=schedule.schedule_minute,
                second=0,
                unique=True,
            )
        )
    return jobs


class WorkerSettings:
    """The arq worker's fixed parts; :func:`create_worker` adds what comes from settings."""

    functions = FUNCTIONS
    on_startup = startup
    on_shutdown = shutdown
    job_serializer = serialize_job
    job_deserializer = deserialize_job
    keep_result = 3600
    health_check_interval = 30
    log_results = False  # the result's repr only served arq's per-job log line


def create_worker(
    settings: Settings | None = None,
    *,
    registry: Registry | None = None,
    metrics: Metrics | None = None,
    **overrides: Any,
) -> Worker:
    """A worker for ``settings``; tests pass ``burst=True, poll_delay=0``. ``registry`` and
    ``metrics``: the ones the process built already (``serve``); else its start-up builds
    them."""
    settings = settings or get_settings()
    if settings.redis_url is None:
        raise RuntimeError("FORMULA_OPS_REDIS_URL is not set")
    options: dict[str, Any] = {
        name: getattr(WorkerSettings, name)
        for name in (
            "functions",
            "on_startup",
            "on_shutdown",
            "job_serializer",
            "job_deserializer",
            "keep_result",
            "health_check_interval",
            "log_results",
        )
    }
    options |= {
        "cron_jobs": cron_jobs(settings),
        "queue_name": settings.queue_name,
        "redis_pool": connect_redis(
            settings.redis_url.get_secret_value(), queue_name=settings.queue_name
        ),
        "ctx": {"settings": settings, "registry": registry, "metrics": metrics},
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.worker_job_timeout_seconds,
        "poll_delay": settings.worker_poll_delay_seconds,
        "health_check_key": f"{settings.queue_name}:health-check",
    }
    options.update(overrides)
    quiet_job_logs(settings.log_level)
    subscriber = Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=None, health_check_interval=30
    )
    return WakeableWorker(subscriber=subscriber, **options)


# arq's two INFO lines per job that succeeded (start, end); retries, aborts and failures
# keep their own lines.
_JOB_LINES = frozenset({"%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s"})


# arq names a job ``<job id>:<function>``; a run's job id is its run id (``:<n>`` after).
_RUN_JOB = re.compile(rf"^(?P<run_id>[0-9a-f-]{{36}})(?::\d+)?(?::{JobName.EXECUTE_RUN.value})?$")


def _tag_run(record: logging.LogRecord) -> None:
    """arq logs a job's retry, abort or failure outside the job's own context: the line
    gets the run's id from the job's reference."""
    if getattr(record, "run_id", None) is None and isinstance(record.args, tuple):
        for arg in record.args:
            found = _RUN_JOB.match(arg) if isinstance(arg, str) else None
            if found:
                record.run_id = found.group("run_id")
                return


class _WithoutJobLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _JOB_LINES:
            return False
        _tag_run(record)
        return True


class _RunIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        _tag_run(record)
        return True


_job_lines_filter = _WithoutJobLines()
_run_ids_filter = _RunIds()


def quiet_job_logs(log_level: str) -> None:
    """Drop arq's per-job start and end lines unless ``log_level`` is DEBUG (at 100 jobs/s
    they are 200 lines a second that say less than the run events already do)."""
    arq_logger = logging.getLogger("arq.worker")
    if log_level == "DEBUG":
        arq_logger.removeFilter(_job_lines_filter)
        arq_logger.addFilter(_run_ids_filter)
    else:
        arq_logger.removeFilter(_run_ids_filter)
        arq_logger.addFilter(_job_lines_filter)


async def stop_worker(worker: Worker, task: asyncio.Task[None], limit: float = 15.0) -> None:
    """Stop a worker running as ``task`` (``asyncio.create_task(worker.main())``).

    arq's loop can absorb a cancellation that lands while it starts a job, so cancel
    until the task has ended; then close it (which waits for its job tasks)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await worker.close()
