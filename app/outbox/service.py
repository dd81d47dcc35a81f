"""The outbox: domain events written in the transaction of the change they announce.

A dispatcher (a worker cron job) turns undispatched rows into webhook deliveries, so an
event exists if and only if its change was committed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import insert_rows, utcnow
from app.core.ids import new_id
from app.outbox.models import OutboxEvent


async def add_event(session: AsyncSession, type: str, data: dict[str, Any]) -> OutboxEvent:
    """Record ``type`` (``<domain>.<past-tense verb>``) in the caller's transaction (one
    INSERT, at once)."""
    event = OutboxEvent(id=new_id(), type=type, data=data, created_at=utcnow())
    await insert_rows(session, [event])
    return event
