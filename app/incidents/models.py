"""Tables: incidents, the components each affects (with the status it set them to),
the timeline of updates, and the response-clock events already emitted (each once).

Response clocks are data: ``ack_due_at``, ``next_update_due_at`` and
``resolve_target_at`` are computed from the severity's policy when the incident opens,
changes severity or gets an update; a scheduled job compares them with the time and
records an ``IncidentClockEvent`` (unique per incident, clock, due time and level), so
``incident.sla_warning`` / ``incident.sla_breached`` are emitted once each even with
several workers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id


class Incident(Base):
    __tablename__ = "incident"
    __table_args__ = (
        # One open incident per alert group (or per run that opened one).
        UniqueConstraint("dedupe_key"),
        Index("ix_incident_status_created_at", "status", "created_at"),
        Index("ix_incident_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(2))  # P0 | P1 | P2 | P3
    impact: Mapped[str] = mapped_column(String(16))  # none | minor | major | critical
    # investigating | identified | monitoring | resolved | postmortem
    status: Mapped[str] = mapped_column(String(16), default="investigating")
    # manual | alertmanager | deployment | backup
    source: Mapped[str] = mapped_column(String(16), default="manual")
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    commander: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(200))
    acknowledged_at: Mapped[dt.datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    ack_due_at: Mapped[dt.datetime | None]
    next_update_due_at: Mapped[dt.datetime | None]
    resolve_target_at: Mapped[dt.datetime | None]
    identified_at: Mapped[dt.datetime | None]
    monitoring_at: Mapped[dt.datetime | None]
    resolved_at: Mapped[dt.datetime | None]
    postmortem_body: Mapped[str | None] = mapped_column(Text)
    postmortem_published_at: Mapped[dt.datetime | None]
    action_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)


class IncidentComponent(Base):
    __tablename__ = "incident_component"

    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incident.id", ondelete="CASCADE"), primary_key=True
    )
    component_id: Mapped[str] = mapped_column(
        ForeignKey("component.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(32))


class IncidentUpdateRecord(Base):
    """One entry of the timeline: a message (public: shown on the status page; internal:
    operators only) and the status (and severity) it set."""

    __tablename__ = "incident_update"
    __table_args__ = (Index("ix_incident_update_incident_id", "incident_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str | None] = mapped_column(String(2))
    body: Mapped[str] = mapped_column(Text)
    visibility: Mapped[str] = mapped_column(String(16), default="public")  # public | internal
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IncidentClockEvent(Base):
    """A response-clock event emitted: ``clock`` (ack | update | resolve) reached
    ``level`` (warning | breached) for the deadline ``due_at``."""

    __tablename__ = "incident_clock_event"

    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incident.id", ondelete="CASCADE"), primary_key=True
    )
    clock: Mapped[str] = mapped_column(String(16), primary_key=True)
    level: Mapped[str] = mapped_column(String(16), primary_key=True)
    due_at: Mapped[dt.datetime] = mapped_column(primary_key=True)
    emitted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
