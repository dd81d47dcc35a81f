"""Periodic jobs (arq cron; each runs on one worker at a time)."""

from __future__ import annotations

import logging

from app import idempotency
from workers.context import WorkerContext

logger = logging.getLogger(__name__)


async def purge_idempotency_keys(ctx: WorkerContext) -> int:
    async with ctx["context"].unit_of_work() as uow:
        purged = await idempotency.purge_expired(uow.session)
    logger.info("purged %d expired idempotency keys", purged)
    return purged
