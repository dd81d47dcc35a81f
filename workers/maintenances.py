"""The maintenance scheduler: starts and ends windows on time (app.maintenances.service)."""

from __future__ import annotations

from app.core.db import utcnow
from app.maintenances import service
from workers.state import WorkerState


async def schedule_maintenances(ctx: WorkerState) -> dict[str, int]:
    done = await service.tick(ctx["context"], utcnow())
    return done.counts()
