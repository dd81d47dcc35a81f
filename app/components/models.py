"""Tables: components, and the claims other records hold on a component's status.

A component's ``status`` is what readers see. It is the worst of what an operator set
(``manual_status``) and of every claim on it: an open incident claims the status it set
its components to, an in-progress maintenance claims ``under_maintenance``. Ending the
incident or the window drops its claims, and the component comes back to the worst of
what remains (``app.components.service.set_claims``): nothing has to remember what
the status was "before".
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id


class Component(Base):
    __tablename__ = "component"
    __table_args__ = (
        UniqueConstraint("name"),
        Index("ix_component_group_position", "group_name", "position"),
        Index("ix_component_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    group_name: Mapped[str | None] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(default=0)
    # What readers see: the worst of manual_status and every claim.
    status: Mapped[str] = mapped_column(String(32), default="operational")
    # What an operator set through the API.
    manual_status: Mapped[str] = mapped_column(String(32), default="operational")
    # The services behind it, `environment/service` (an incident lists their deployments).
    services: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Shown on the public status page (Statuspage's `showcase`).
    showcase: Mapped[bool] = mapped_column(default=True)
    status_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)


class ComponentStatusClaim(Base):
    """``source_type`` (``incident`` | ``maintenance``) ``source_id`` holds ``status`` on
    the component while it lasts."""

    __tablename__ = "component_status_claim"
    __table_args__ = (Index("ix_component_status_claim_source", "source_type", "source_id"),)

    component_id: Mapped[str] = mapped_column(
        ForeignKey("component.id", ondelete="CASCADE"), primary_key=True
    )
    source_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StatusRevision(Base):
    """One row: a counter bumped by every transaction that changes what the public status
    shows (components, incidents, maintenances), so any API process can tell whether its
    cached status is still current with one primary-key read."""

    __tablename__ = "status_revision"

    id: Mapped[int] = mapped_column(primary_key=True)
    revision: Mapped[int] = mapped_column(default=0)
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
