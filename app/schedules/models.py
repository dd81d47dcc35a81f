"""Schedules, the slots they fired (or missed), and which runbooks' default schedules
were created already (so a deleted default schedule stays deleted)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id


class ScheduleOrigin(enum.StrEnum):
    DEFAULT = "default"  # created from the runbook's default schedule on first start
    API = "api"  # created through /v1/schedules


class SlotStatus(enum.StrEnum):
    FIRED = "fired"  # a run was created for the slot
    MISSED = "missed"  # nothing ran the slot in time (everything was down): reported
    FAILED = "failed"  # the run could not be created (the runbook refused its parameters)


class Schedule(Base):
    __tablename__ = "schedule"
    __table_args__ = (Index("ix_schedule_enabled_next_run_at", "enabled", "next_run_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    runbook: Mapped[str] = mapped_column(String(100), index=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(default=True)
    origin: Mapped[str] = mapped_column(String(16), default=ScheduleOrigin.API.value)
    # The next slot to fire (UTC); None while disabled.
    next_run_at: Mapped[dt.datetime | None]
    last_slot_at: Mapped[dt.datetime | None]
    last_run_id: Mapped[str | None] = mapped_column(String(36))
    created_by: Mapped[str | None] = mapped_column(String(200))
    revision: Mapped[int] = mapped_column(default=1)  # the ETag
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ScheduleSlot(Base):
    """One slot of a schedule: fired once (the unique constraint holds across workers),
    or reported missed."""

    __tablename__ = "schedule_slot"
    __table_args__ = (UniqueConstraint("schedule_id", "slot_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedule.id", ondelete="CASCADE"))
    slot_at: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ScheduleDefault(Base):
    """A runbook whose default schedule was created (once; deleting it is final)."""

    __tablename__ = "schedule_default"

    runbook: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
