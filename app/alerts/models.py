"""The alerts table: one row per Alertmanager alert, keyed by its group and its
fingerprint, so a re-sent notification updates the row and never adds one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id


class Alert(Base):
    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("group_key_hash", "fingerprint"),
        Index("ix_alert_incident_id", "incident_id"),
        Index("ix_alert_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # SHA-256 of Alertmanager's groupKey (which may be long), and the key itself.
    group_key_hash: Mapped[str] = mapped_column(String(64))
    group_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    receiver: Mapped[str] = mapped_column(String(200), default="")
    alertname: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16))  # firing | resolved
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    starts_at: Mapped[dt.datetime | None]
    ends_at: Mapped[dt.datetime | None]
    generator_url: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[str | None] = mapped_column(String(2))
    threshold: Mapped[str | None] = mapped_column(String(64))
    incident_id: Mapped[str | None] = mapped_column(ForeignKey("incident.id", ondelete="SET NULL"))
    # The maintenance window that held it back: wholly (no incident) or, when it is
    # linked to an incident, the components the window covers.
    suppressed_by: Mapped[str | None] = mapped_column(String(36))
    received_count: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
