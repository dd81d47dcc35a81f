"""The outbox: domain events written in the transaction of the change they announce.

A dispatcher (a worker cron job) turns undispatched rows into webhook deliveries, so an
event exists if and only if its change was committed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow
from app.ids import new_id


class OutboxEvent(Base):
    __tablename__ = "outbox_event"
    __table_args__ = (
        Index("ix_outbox_event_dispatched_at_created_at", "dispatched_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[dt.datetime | None]


async def add_event(session: AsyncSession, type: str, data: dict[str, Any]) -> OutboxEvent:
    """Record ``type`` (``<domain>.<past-tense verb>``) in the caller's transaction."""
    event = OutboxEvent(type=type, data=data)
    session.add(event)
    await session.flush()
    return event
