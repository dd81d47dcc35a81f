"""Shared helpers of the receiver's tests: components inserted as rows (their API is
another domain's), an alerts-scoped token, and readers of what a notification did."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.alerts.models import Alert
from app.audit.models import AuditEvent
from app.auth.roles import Role
from app.components.models import Component
from app.core.context import AppContext
from app.core.db import utcnow
from app.incidents.models import Incident, IncidentUpdateRecord
from app.maintenances.models import Maintenance, MaintenanceComponent
from tests.factories import IssuedToken, issue_token

RECEIVER = "/v1/alerts/alertmanager"


@pytest.fixture
async def alerts_token(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.VIEWER, name="alertmanager", scope="alerts")


@pytest.fixture
async def backend_api(context: AppContext) -> str:
    """The runbook's "Backend API" component, behind local/backend."""
    return await add_component(context, "Backend API", ["local/backend", "production/backend"])


async def add_component(context: AppContext, name: str, services: list[str]) -> str:
    component = Component(name=name, services=services, group_name="Core")
    async with context.unit_of_work() as uow:
        uow.session.add(component)
        await uow.session.flush()
        return component.id


async def add_window(
    context: AppContext, component_ids: list[str], *, status: str = "in_progress"
) -> str:
    now = utcnow()
    window = Maintenance(
        title="Database upgrade",
        status=status,
        scheduled_for=now - dt.timedelta(minutes=5),
        scheduled_until=now + dt.timedelta(hours=1),
        started_at=now - dt.timedelta(minutes=5) if status == "in_progress" else None,
        created_by="tests",
    )
    async with context.unit_of_work() as uow:
        uow.session.add(window)
        await uow.session.flush()
        for component_id in component_ids:
            uow.session.add(
                MaintenanceComponent(maintenance_id=window.id, component_id=component_id)
            )
        return window.id


async def post(
    client: httpx.AsyncClient, token: IssuedToken, body: Any, **kw: Any
) -> httpx.Response:
    return await client.post(RECEIVER, json=body, headers=token.headers, **kw)


@dataclass
class State:
    incidents: list[Incident]
    alerts: list[Alert]
    updates: int  # public timeline entries
    receipts: int
    component_status: dict[str, str]
    public: list[str]  # the public entries' text, oldest first
    internal: list[str]  # the internal entries' text, oldest first


@pytest.fixture
def started() -> dt.datetime:
    """When the test began: audit events (never deleted) are counted from here."""
    return utcnow()


async def state(context: AppContext, since: dt.datetime) -> State:
    async with context.sessionmaker() as session:
        incidents = list(
            (await session.scalars(select(Incident).order_by(Incident.created_at))).all()
        )
        alerts = list((await session.scalars(select(Alert).order_by(Alert.fingerprint))).all())
        entries = (
            await session.execute(
                select(IncidentUpdateRecord.visibility, IncidentUpdateRecord.body).order_by(
                    IncidentUpdateRecord.created_at, IncidentUpdateRecord.id
                )
            )
        ).all()
        public = [body for visibility, body in entries if visibility == "public"]
        internal = [body for visibility, body in entries if visibility == "internal"]
        receipts = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "alert.receive", AuditEvent.created_at >= since)
        )
        components = dict((await session.execute(select(Component.id, Component.status))).all())
    return State(incidents, alerts, len(public), int(receipts or 0), components, public, internal)
