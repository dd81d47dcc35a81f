"""Periodic jobs (arq cron; each runs on one worker at a time)."""

from __future__ import annotations

import datetime as dt
import logging

from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.settings import Settings
from app.health_checks import service as health_check_service
from app.idempotency import service as idempotency
from app.runs import service as run_service
from app.webhooks import retention as webhook_retention
from workers.state import WorkerState

logger = logging.getLogger(__name__)


async def purge_idempotency_keys(ctx: WorkerState) -> int:
    async with ctx["context"].unit_of_work() as uow:
        purged = await idempotency.purge_expired(uow.session)
    logger.info("purged %d expired idempotency keys", purged)
    return purged


def reconcile_timeout(settings: Settings) -> float:
    """The reconcile job's timeout: four of its intervals, at least 30 s."""
    return float(max(settings.reconcile_every_seconds * 4, 30))


async def reconcile_runs(ctx: WorkerState) -> dict[str, int]:
    context = ctx["context"]
    stale_after = dt.timedelta(seconds=context.settings.reconcile_stale_after_seconds)
    # Half the timeout: a slow pass ends with its work committed, not cut off midway.
    budget = dt.timedelta(seconds=reconcile_timeout(context.settings) / 2)
    done = await run_service.reconcile(context, stale_after=stale_after, budget=budget)
    return {"requeued_expired": done.requeued_expired, "reenqueued_stale": done.reenqueued_stale}


async def scheduled_health_check(ctx: WorkerState) -> str:
    """The runbook's daily health check, as ``schedule:daily-health-check``."""
    context = ctx["context"]
    async with context.unit_of_work() as uow:
        run = await health_check_service.create(
            uow, context, Principal.system("schedule:daily-health-check", Role.OPERATOR)
        )
    return run.id


async def purge_webhook_history(ctx: WorkerState) -> dict[str, int]:
    purged = await webhook_retention.purge(ctx["context"])
    logger.info(
        "purged %d finished webhook deliveries and %d delivered events",
        purged.deliveries,
        purged.events,
    )
    return {"deliveries": purged.deliveries, "events": purged.events}
