"""The status page's test data, written through the model classes and the one function
that changes a component's status (``claims.set_claims``), each change in a transaction
that bumps the status revision, as the domains' services do."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from app.components import claims, revision
from app.components.models import Component
from app.components.vocabulary import SEVERITY_COMPONENT_STATUS
from app.core.context import AppContext
from app.core.db import insert_rows, utcnow
from app.incidents.models import Incident, IncidentComponent, IncidentUpdateRecord
from app.maintenances.models import Maintenance, MaintenanceComponent, MaintenanceUpdate

# The runbook's components, as the embedded default seeds them.
RUNBOOK = (
    ("Frontend", "Application", 1),
    ("Backend API", "Application", 2),
    ("Database", "Data", 1),
    ("Cache", "Data", 2),
    ("File Storage", "Data", 3),
)
# Never shown: what an operator alone may read.
SECRET_COMPONENT = "Internal Tooling"
INTERNAL_UPDATE = "Internal: suspect deploy 42, paging the database owner"
DEDUPE_KEY = '{}:{alertname="HighErrorRate"}'
COMMANDER = "alice.commander@example.com"


@dataclass(frozen=True)
class Page:
    ids: dict[str, str]  # component name → id


async def seed_components(context: AppContext) -> Page:
    now = utcnow()
    rows = [
        Component(
            name=name,
            description=f"The {name.lower()}",
            group_name=group,
            position=position,
            services=[],
            showcase=True,
            status="operational",
            manual_status="operational",
            created_at=now,
            updated_at=now,
            status_changed_at=now,
        )
        for name, group, position in RUNBOOK
    ]
    rows.append(
        Component(
            name=SECRET_COMPONENT,
            description="",
            group_name=None,
            position=0,
            services=[],
            showcase=False,
            status="major_outage",
            manual_status="major_outage",
            created_at=now,
            updated_at=now,
            status_changed_at=now,
        )
    )
    async with context.unit_of_work() as uow:
        await insert_rows(uow.session, rows)
        await revision.bump(uow.session)
    return Page({row.name: row.id for row in rows})


async def open_incident(
    context: AppContext,
    page: Page,
    *,
    title: str = "Elevated error rate on the Backend API",
    component: str = "Backend API",
    severity: str = "P1",
    impact: str = "major",
    status: str = "investigating",
    public_message: str = "We are investigating elevated error rates on the API.",
    created_at: dt.datetime | None = None,
) -> str:
    """An open incident (as ``incidents.service`` opens one) claiming its component."""
    now = created_at or utcnow()
    component_id = page.ids[component]
    component_status = SEVERITY_COMPONENT_STATUS[severity]
    closed = status in ("resolved", "postmortem")
    incident = Incident(
        title=title,
        severity=severity,
        impact=impact,
        status=status,
        source="alertmanager",
        dedupe_key=None if closed else DEDUPE_KEY + title,
        commander=COMMANDER,
        created_by="tests",
        ack_due_at=now + dt.timedelta(minutes=15),
        resolved_at=now + dt.timedelta(hours=1) if closed else None,
        created_at=now,
        updated_at=now,
    )
    async with context.unit_of_work() as uow:
        await insert_rows(uow.session, [incident])
        await insert_rows(
            uow.session,
            [
                IncidentComponent(
                    incident_id=incident.id, component_id=component_id, status=component_status
                )
            ],
        )
        await insert_rows(
            uow.session,
            [
                IncidentUpdateRecord(
                    incident_id=incident.id,
                    status=status,
                    severity=severity,
                    body=public_message,
                    visibility="public",
                    created_by="tests",
                    created_at=now,
                ),
                IncidentUpdateRecord(
                    incident_id=incident.id,
                    status=status,
                    severity=severity,
                    body=INTERNAL_UPDATE,
                    visibility="internal",
                    created_by="tests",
                    created_at=now + dt.timedelta(seconds=1),
                ),
            ],
        )
        if not closed:
            await claims.set_claims(
                uow.session, claims.INCIDENT, incident.id, {component_id: component_status}
            )
        await revision.bump(uow.session)
    return incident.id


async def resolve_incident(context: AppContext, incident_id: str) -> None:
    async with context.unit_of_work() as uow:
        incident = await uow.session.get(Incident, incident_id)
        assert incident is not None
        now = utcnow()
        incident.status = "resolved"
        incident.resolved_at = now
        incident.updated_at = now
        incident.dedupe_key = None
        await insert_rows(
            uow.session,
            [
                IncidentUpdateRecord(
                    incident_id=incident_id,
                    status="resolved",
                    body="The error rate is back to normal.",
                    visibility="public",
                    created_by="tests",
                    created_at=now,
                )
            ],
        )
        await claims.set_claims(uow.session, claims.INCIDENT, incident_id, {})
        await revision.bump(uow.session)


async def maintenance(
    context: AppContext,
    page: Page,
    *,
    title: str = "Database upgrade to PostgreSQL 16",
    component: str = "Database",
    status: str = "in_progress",
    starts_in: dt.timedelta = dt.timedelta(minutes=-10),
    message: str = "The database upgrade is under way.",
) -> str:
    """A window in ``status``; in progress, it claims ``under_maintenance``."""
    now = utcnow()
    component_id = page.ids[component]
    window = Maintenance(
        title=title,
        description="Planned upgrade; writes pause for a few minutes.",
        status=status,
        scheduled_for=now + starts_in,
        scheduled_until=now + starts_in + dt.timedelta(hours=1),
        started_at=now if status == "in_progress" else None,
        created_by="tests",
        created_at=now,
        updated_at=now,
    )
    async with context.unit_of_work() as uow:
        await insert_rows(uow.session, [window])
        await insert_rows(
            uow.session,
            [MaintenanceComponent(maintenance_id=window.id, component_id=component_id)],
        )
        await insert_rows(
            uow.session,
            [
                MaintenanceUpdate(
                    maintenance_id=window.id,
                    status=status,
                    body=message,
                    created_by="tests",
                    created_at=now,
                ),
            ],
        )
        if status == "in_progress":
            await claims.set_claims(
                uow.session, claims.MAINTENANCE, window.id, {component_id: "under_maintenance"}
            )
        await revision.bump(uow.session)
    return window.id
