"""Run and step tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base, utcnow
from app.core.ids import new_id

# The words of runs, defined apart (plain values) and imported from here as before.
from app.runs.vocabulary import TERMINAL_STATUSES as TERMINAL_STATUSES
from app.runs.vocabulary import Level as Level
from app.runs.vocabulary import Phase as Phase
from app.runs.vocabulary import RunKind as RunKind
from app.runs.vocabulary import RunStatus as RunStatus
from app.runs.vocabulary import StepStatus as StepStatus


class Run(Base):
    __tablename__ = "run"
    __table_args__ = (
        Index("ix_run_created_at_id", "created_at", "id"),
        Index("ix_run_status_lease_expires_at", "status", "lease_expires_at"),
        Index("ix_run_kind_created_at", "kind", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.QUEUED.value)
    environment: Mapped[str | None] = mapped_column(String(100), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requested_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None]
    lease_epoch: Mapped[int] = mapped_column(default=0)
    enqueue_count: Mapped[int] = mapped_column(default=0)
    failure_type: Mapped[str | None] = mapped_column(String(200))
    failure_detail: Mapped[str | None] = mapped_column(Text)
    cancel_requested_at: Mapped[dt.datetime | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    event_seq: Mapped[int] = mapped_column(default=0)

    steps: Mapped[list[Step]] = relationship(
        back_populates="run", lazy="raise", order_by="Step.position"
    )


class Step(Base):
    __tablename__ = "step"
    __table_args__ = (UniqueConstraint("run_id", "position"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default=StepStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    output: Mapped[str | None] = mapped_column(Text)
    output_truncated: Mapped[bool] = mapped_column(default=False)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotent: Mapped[bool] = mapped_column(default=False)
    stop_on_failure: Mapped[bool] = mapped_column(default=True)
    phase: Mapped[str] = mapped_column(
        String(16), default=Phase.MAIN.value, server_default=Phase.MAIN.value
    )
    timeout_seconds: Mapped[float] = mapped_column(default=300.0)
    level: Mapped[str | None] = mapped_column(String(16))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="steps", lazy="raise")


class RunEvent(Base):
    """Progress of a run, in order: step started/finished, log lines, final status.

    ``seq`` counts per run from 1 and is the Server-Sent Events id, so a client resumes
    with ``Last-Event-ID`` exactly where it stopped.
    """

    __tablename__ = "run_event"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    seq: Mapped[int]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
