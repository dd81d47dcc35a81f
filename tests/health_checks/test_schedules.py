"""The daily health check runs by itself, as ``schedule:daily-health-check``."""

from __future__ import annotations

from sqlalchemy import select

from app.core.context import AppContext
from app.core.settings import HealthCheckSettings, Settings
from app.runs.models import Run
from workers.cron import scheduled_health_check
from workers.main import cron_jobs
from workers.state import WorkerState


async def test_the_scheduled_job_creates_a_health_check(context: AppContext) -> None:
    ctx: WorkerState = {"settings": context.settings, "context": context, "worker_id": "t"}
    run_id = await scheduled_health_check(ctx)
    async with context.sessionmaker() as session:
        run = await session.scalar(select(Run).where(Run.id == run_id))
    assert run is not None
    assert run.kind == "health_check"
    assert run.requested_by == "schedule:daily-health-check"
    assert run.status == "queued"


def test_daily_at_the_configured_time() -> None:
    settings = Settings(health_check=HealthCheckSettings(schedule_hour=4, schedule_minute=30))
    (job,) = [j for j in cron_jobs(settings) if j.name == "daily_health_check"]
    assert (job.hour, job.minute, job.second) == (4, 30, 0)
    assert job.unique


def test_the_schedule_can_be_turned_off() -> None:
    settings = Settings(health_check=HealthCheckSettings(schedule_enabled=False))
    assert "daily_health_check" not in {j.name for j in cron_jobs(settings)}
