"""The thresholds table: one row per measured quantity (``error_rate``,
``latency_p95``, ``cpu``, ``memory``, ``disk``), seeded with the runbook's numbers by
the migration that creates it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class Threshold(Base):
    __tablename__ = "threshold"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # percent | milliseconds (the unit of warning, critical and measured values)
    unit: Mapped[str] = mapped_column(String(16))
    # A value above `warning` is a warning, above `critical` critical; null: no such level.
    warning: Mapped[float | None]
    critical: Mapped[float | None]
    # The incident severity an alert at each level opens (P0 only by an explicit rule).
    warning_severity: Mapped[str] = mapped_column(String(2), default="P2")
    critical_severity: Mapped[str] = mapped_column(String(2), default="P1")
    # Alertmanager `alertname`s that measure this quantity.
    alert_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    # PromQL for post-deploy verification (an instant query; `$service`, `$environment`
    # and `$window` are replaced by validated values); null: not queried from Prometheus.
    prometheus_query: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(200), default="system")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)
