"""Deployments: a run of kind ``deployment`` (or ``rollback``) plus what it deploys.

One active deployment per environment + service is a database rule: a target row turns
``active`` when its worker claims the run, and a partial unique index allows one active
row per environment + service, across every API replica and worker.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id


class TargetState(enum.StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    DONE = "done"


class Deployment(Base):
    __tablename__ = "deployment"
    __table_args__ = (Index("ix_deployment_environment_created_at", "environment", "created_at"),)

    id: Mapped[str] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # deployment | rollback
    environment: Mapped[str] = mapped_column(String(63))
    ref: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    checklist: Mapped[list[str]] = mapped_column(JSON, default=list)
    required_checklist: Mapped[list[str]] = mapped_column(JSON, default=list)
    backup: Mapped[bool] = mapped_column(default=False)
    auto_rollback: Mapped[bool] = mapped_column(default=True)
    rollback_of: Mapped[str | None] = mapped_column(String(36))
    requested_by: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Written once, when the deployment ends; never changed afterwards.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class DeploymentTarget(Base):
    """One service a deployment changes, in deploy order."""

    __tablename__ = "deployment_target"
    __table_args__ = (
        Index(
            "uq_deployment_target_one_active",
            "environment",
            "service",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
        Index("ix_deployment_target_environment_service_state", "environment", "service", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployment.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    environment: Mapped[str] = mapped_column(String(63))
    service: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(128))
    # What ran before this deployment touched the service (set by its deploy step).
    previous_version: Mapped[str | None] = mapped_column(String(128))
    # Set (and committed) before the driver changes anything.
    touched: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default=TargetState.QUEUED.value)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
