"""What the public status shows, read from the tables in one go: the showcase
components, the incidents (with their public updates only) and the maintenance windows
(cancelled ones left out).

Nothing internal is read into a :class:`Snapshot`: no severity, commander, dedupe key,
internal update or alert, so no document built from it can show one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.components.models import Component, StatusRevision
from app.components.vocabulary import CLOSED_INCIDENT
from app.incidents.models import Incident, IncidentComponent, IncidentUpdateRecord
from app.maintenances.models import Maintenance, MaintenanceComponent, MaintenanceUpdate

RECENT = 50  # Statuspage's incidents.json and scheduled-maintenances.json: the 50 newest
HISTORY_DAYS = 90  # the HTML page's incident history
HISTORY_LIMIT = 500  # at most this many past incidents on the HTML page
ACTIVE_MAINTENANCE = ("in_progress", "verifying")
UPCOMING_MAINTENANCE = ("scheduled",)
HIDDEN_MAINTENANCE = ("cancelled",)


@dataclass(frozen=True)
class PublicComponentRow:
    id: str
    name: str
    description: str
    group: str | None
    position: int
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class UpdateRow:
    id: str
    status: str
    body: str
    created_at: dt.datetime


@dataclass
class IncidentRow:
    id: str
    name: str
    status: str
    impact: str
    created_at: dt.datetime
    updated_at: dt.datetime
    monitoring_at: dt.datetime | None
    resolved_at: dt.datetime | None
    updates: list[UpdateRow] = field(default_factory=list)  # newest first
    component_ids: list[str] = field(default_factory=list)

    @property
    def unresolved(self) -> bool:
        return self.status not in CLOSED_INCIDENT


@dataclass
class MaintenanceRow:
    id: str
    name: str
    description: str
    status: str
    scheduled_for: dt.datetime
    scheduled_until: dt.datetime
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    updates: list[UpdateRow] = field(default_factory=list)  # newest first
    component_ids: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_MAINTENANCE

    @property
    def upcoming(self) -> bool:
        return self.status in UPCOMING_MAINTENANCE


@dataclass
class Snapshot:
    """The public status at one revision."""

    revision: int
    updated_at: dt.datetime
    taken_at: dt.datetime
    components: list[PublicComponentRow]  # by group, position, name
    incidents: list[IncidentRow]  # newest first
    maintenances: list[MaintenanceRow]  # newest first (by scheduled_for)

    by_id: dict[str, PublicComponentRow] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {component.id: component for component in self.components}


async def snapshot(session: AsyncSession, revision: int, now: dt.datetime) -> Snapshot:
    """Read the public status (``revision`` is the caller's read of it, the cache key)."""
    changed_at = await session.scalar(
        select(StatusRevision.changed_at).where(StatusRevision.id == 1)
    )
    components = [
        PublicComponentRow(
            id=row.id,
            name=row.name,
            description=row.description,
            group=row.group_name,
            position=row.position,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in (
            await session.scalars(
                select(Component)
                .where(Component.showcase.is_(True))
                .order_by(Component.group_name, Component.position, Component.name)
            )
        ).all()
    ]
    shown = {component.id for component in components}
    incidents = await _incidents(session, now, shown)
    maintenances = await _maintenances(session, shown)
    return Snapshot(
        revision=revision,
        updated_at=changed_at or now,
        taken_at=now,
        components=components,
        incidents=incidents,
        maintenances=maintenances,
    )


async def _incidents(session: AsyncSession, now: dt.datetime, shown: set[str]) -> list[IncidentRow]:
    newest = select(Incident.id).order_by(Incident.created_at.desc(), Incident.id.desc())
    recent_ids = set((await session.scalars(newest.limit(RECENT))).all())
    cutoff = now - dt.timedelta(days=HISTORY_DAYS)
    other_ids = set(
        (
            await session.scalars(
                newest.where(
                    or_(Incident.status.not_in(CLOSED_INCIDENT), Incident.created_at >= cutoff)
                ).limit(HISTORY_LIMIT)
            )
        ).all()
    )
    ids = sorted(recent_ids | other_ids)
    if not ids:
        return []
    rows = (
        await session.execute(
            select(
                Incident.id,
                Incident.title,
                Incident.status,
                Incident.impact,
                Incident.created_at,
                Incident.updated_at,
                Incident.monitoring_at,
                Incident.resolved_at,
            )
            .where(Incident.id.in_(ids))
            .order_by(Incident.created_at.desc(), Incident.id.desc())
        )
    ).all()
    incidents = {
        row.id: IncidentRow(
            id=row.id,
            name=row.title,
            status=row.status,
            impact=row.impact,
            created_at=row.created_at,
            updated_at=row.updated_at,
            monitoring_at=row.monitoring_at,
            resolved_at=row.resolved_at,
        )
        for row in rows
    }
    updates = await session.execute(
        select(
            IncidentUpdateRecord.id,
            IncidentUpdateRecord.incident_id,
            IncidentUpdateRecord.status,
            IncidentUpdateRecord.body,
            IncidentUpdateRecord.created_at,
        )
        .where(
            IncidentUpdateRecord.incident_id.in_(ids),
            IncidentUpdateRecord.visibility == "public",
        )
        .order_by(IncidentUpdateRecord.created_at.desc(), IncidentUpdateRecord.id.desc())
    )
    for update in updates:
        incidents[update.incident_id].updates.append(
            UpdateRow(update.id, update.status, update.body, update.created_at)
        )
    links = await session.execute(
        select(IncidentComponent.incident_id, IncidentComponent.component_id)
        .where(IncidentComponent.incident_id.in_(ids))
        .order_by(IncidentComponent.component_id)
    )
    for incident_id, component_id in links:
        if component_id in shown:
            incidents[incident_id].component_ids.append(component_id)
    return list(incidents.values())


async def _maintenances(session: AsyncSession, shown: set[str]) -> list[MaintenanceRow]:
    newest = (
        select(Maintenance.id)
        .where(Maintenance.status.not_in(HIDDEN_MAINTENANCE))
        .order_by(Maintenance.scheduled_for.desc(), Maintenance.id.desc())
    )
    recent_ids = set((await session.scalars(newest.limit(RECENT))).all())
    open_ids = set(
        (
            await session.scalars(
                newest.where(
                    Maintenance.status.in_(ACTIVE_MAINTENANCE + UPCOMING_MAINTENANCE)
                ).limit(HISTORY_LIMIT)
            )
        ).all()
    )
    ids = sorted(recent_ids | open_ids)
    if not ids:
        return []
    windows = {
        row.id: MaintenanceRow(
            id=row.id,
            name=row.title,
            description=row.description,
            status=row.status,
            scheduled_for=row.scheduled_for,
            scheduled_until=row.scheduled_until,
            started_at=row.started_at,
            completed_at=row.completed_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in (
            await session.scalars(
                select(Maintenance)
                .where(Maintenance.id.in_(ids))
                .order_by(Maintenance.scheduled_for.desc(), Maintenance.id.desc())
            )
        ).all()
    }
    updates = await session.execute(
        select(
            MaintenanceUpdate.id,
            MaintenanceUpdate.maintenance_id,
            MaintenanceUpdate.status,
            MaintenanceUpdate.body,
            MaintenanceUpdate.created_at,
        )
        .where(MaintenanceUpdate.maintenance_id.in_(ids))
        .order_by(MaintenanceUpdate.created_at.desc(), MaintenanceUpdate.id.desc())
    )
    for update in updates:
        windows[update.maintenance_id].updates.append(
            UpdateRow(update.id, update.status, update.body, update.created_at)
        )
    links = await session.execute(
        select(MaintenanceComponent.maintenance_id, MaintenanceComponent.component_id)
        .where(MaintenanceComponent.maintenance_id.in_(ids))
        .order_by(MaintenanceComponent.component_id)
    )
    for maintenance_id, component_id in links:
        if component_id in shown:
            windows[maintenance_id].component_ids.append(component_id)
    return list(windows.values())
