"""The outbox: domain events written in the transaction of the change they announce.

A dispatcher (a worker cron job) turns undispatched rows into webhook deliveries, so an
event exists if and only if its change was committed. Every type is registered in the
event catalog (:mod:`app.outbox.catalog`) with the model of its data; data is small (ids,
status, a summary, links), and what exceeds :data:`MAX_EVENT_BYTES` is refused at write
time rather than failing every delivery later.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import insert_rows, utcnow
from app.core.ids import new_id
from app.outbox.models import OutboxEvent

MAX_EVENT_BYTES = 256 * 1024


class EventTooLarge(ValueError):
    """An event's data encodes to more than :data:`MAX_EVENT_BYTES` of JSON (a programming
    error: events carry ids and links, not content)."""


async def add_event(session: AsyncSession, type: str, data: dict[str, Any]) -> OutboxEvent:
    """Record ``type`` (``<domain>.<past-tense verb>``) in the caller's transaction (one
    INSERT, at once). Raises :class:`EventTooLarge`, writing nothing, when ``data`` is too
    large."""
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"the data of event {type!r} is {size} bytes of JSON, more than the "
            f"{MAX_EVENT_BYTES} an event may carry: send ids and links, not content"
        )
    event = OutboxEvent(id=new_id(), type=type, data=data, created_at=utcnow())
    await insert_rows(session, [event])
    return event
