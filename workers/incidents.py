"""The response clocks' periodic job (see app.incidents.clocks)."""

from __future__ import annotations

import logging

from app.core.db import utcnow
from app.incidents import service
from workers.state import WorkerState

logger = logging.getLogger(__name__)


async def check_incident_clocks(ctx: WorkerState) -> int:
    emitted = await service.check_clocks(ctx["context"], utcnow())
    for incident_id, clock, level in emitted:
        logger.info("incident %s: %s clock %s", incident_id, clock, level)
    return len(emitted)
