"""Tables: maintenance windows, the components they put under maintenance, the
environments they freeze (or open, for a deploy window), and their updates."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id


class Maintenance(Base):
    __tablename__ = "maintenance"
    __table_args__ = (
        Index("ix_maintenance_status_scheduled_for", "status", "scheduled_for"),
        Index("ix_maintenance_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # scheduled | in_progress | verifying | completed | cancelled
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    scheduled_for: Mapped[dt.datetime]
    scheduled_until: Mapped[dt.datetime]
    # A deploy window opens its environments for deployments instead of freezing them.
    deploy_window: Mapped[bool] = mapped_column(default=False)
    # Started and ended by the scheduler on time (else by an operator).
    auto_transition: Mapped[bool] = mapped_column(default=True)
    started_at: Mapped[dt.datetime | None]
    verifying_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)


class MaintenanceComponent(Base):
    __tablename__ = "maintenance_component"

    maintenance_id: Mapped[str] = mapped_column(
        ForeignKey("maintenance.id", ondelete="CASCADE"), primary_key=True
    )
    component_id: Mapped[str] = mapped_column(
        ForeignKey("component.id", ondelete="CASCADE"), primary_key=True
    )


class MaintenanceEnvironment(Base):
    __tablename__ = "maintenance_environment"
    __table_args__ = (Index("ix_maintenance_environment_environment", "environment"),)

    maintenance_id: Mapped[str] = mapped_column(
        ForeignKey("maintenance.id", ondelete="CASCADE"), primary_key=True
    )
    environment: Mapped[str] = mapped_column(String(63), primary_key=True)


class MaintenanceUpdate(Base):
    """A message to readers of the status page (Statuspage's maintenance updates)."""

    __tablename__ = "maintenance_update"
    __table_args__ = (
        Index("ix_maintenance_update_maintenance_id", "maintenance_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    maintenance_id: Mapped[str] = mapped_column(ForeignKey("maintenance.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
