"""The schedule firer: creates the runbooks' default schedules and fires the due slots
(app.schedules.service)."""

from __future__ import annotations

from app.core.db import utcnow
from app.schedules import service
from workers.state import WorkerState


async def fire_schedules(ctx: WorkerState) -> dict[str, int]:
    done = await service.tick(ctx["context"], utcnow())
    return done.counts()
