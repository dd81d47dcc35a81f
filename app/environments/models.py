"""Environments, their services, and the versions pinned away from them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id


class Environment(Base):
    __tablename__ = "environment"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # The database a deployment backs up first (None: nothing to back up), and how to
    # reach it: postgresql://user:password@host:port/name or sqlite:///path (its
    # userinfo is a secret: only admins read it).
    database: Mapped[str | None] = mapped_column(String(200))
    database_url: Mapped[str | None] = mapped_column(String(2000))
    # Backups of this environment's database are kept this long (None: the setting).
    backup_retention_days: Mapped[int | None]
    # Read-only queries a restore drill runs in the scratch database (each must succeed).
    backup_smoke_queries: Mapped[list[str]] = mapped_column(JSON, default=list)
    required_checklist: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Prometheus's HTTP API base URL; post-deploy verification queries it when set.
    prometheus_url: Mapped[str | None] = mapped_column(String(2000))
    # The Docker engines the environment's services run on besides the local one:
    # [{name, url (ssh://user@host or tcp://host:port), tls: {ca_cert, client_cert,
    # client_key}}]; the client key is a secret (only admins read it).
    # The server default lets a release that does not know the column insert a row.
    docker_hosts: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, server_default="[]"
    )
    # The application's Redis (the performance playbook reads its INFO stats); its
    # userinfo is a secret.
    redis_url: Mapped[str | None] = mapped_column(String(2000))
    revision: Mapped[int] = mapped_column(default=1)  # the ETag
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Service(Base):
    __tablename__ = "service"
    __table_args__ = (UniqueConstraint("environment", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    environment: Mapped[str] = mapped_column(
        ForeignKey("environment.name", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    driver: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    health_url: Mapped[str | None] = mapped_column(String(2000))
    health_timeout_seconds: Mapped[float] = mapped_column(default=30.0)
    # The service's own Prometheus metrics endpoint, scraped by post-deploy verification
    # when its environment names no Prometheus.
    metrics_url: Mapped[str | None] = mapped_column(String(2000))
    deploy_order: Mapped[int] = mapped_column(default=0)
    settle_seconds: Mapped[float] = mapped_column(default=0.0)
    smoke_tests: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # What the last successful deployment left running.
    current_version: Mapped[str | None] = mapped_column(String(128))
    last_deployment_id: Mapped[str | None] = mapped_column(String(36))
    health_status: Mapped[str | None] = mapped_column(String(16))  # healthy | unhealthy
    health_detail: Mapped[str | None] = mapped_column(Text)
    health_checked_at: Mapped[dt.datetime | None]
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Pin(Base):
    """A version blocked from deployment to an environment's service (set by rollbacks,
    removed by an operator)."""

    __tablename__ = "service_pin"
    __table_args__ = (UniqueConstraint("environment", "service", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    environment: Mapped[str] = mapped_column(String(63))
    service: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    deployment_id: Mapped[str | None] = mapped_column(String(36))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
