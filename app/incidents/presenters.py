"""Incident rows → responses."""

from __future__ import annotations

from collections.abc import Sequence

from app.core.paths import V1
from app.deployments.presenters import location as deployment_location
from app.deployments.schemas import DeployedService
from app.incidents import service
from app.incidents.models import Incident, IncidentUpdateRecord
from app.incidents.schemas import (
    ActionItem,
    AffectedComponentOut,
    IncidentDetail,
    IncidentLinks,
    IncidentOut,
    Postmortem,
    RecentDeployment,
    RecentDeploymentLinks,
    TimelineEntry,
)


def location(incident_id: str) -> str:
    return f"{V1}/incidents/{incident_id}"


def incident_out(incident: Incident, affected: Sequence[service.Affected]) -> IncidentOut:
    here = location(incident.id)
    postmortem = (
        Postmortem(
            body=incident.postmortem_body,
            action_items=[ActionItem.model_validate(i) for i in incident.action_items or []],
            published_at=incident.postmortem_published_at,
        )
        if incident.postmortem_body is not None
        else None
    )
    return IncidentOut(
        id=incident.id,
        title=incident.title,
        severity=incident.severity,
        impact=incident.impact,
        status=incident.status,
        source=incident.source,
        dedupe_key=incident.dedupe_key,
        commander=incident.commander,
        created_by=incident.created_by,
        created_at=incident.created_at,
        updated_at=incident.updated_at,
        acknowledged_at=incident.acknowledged_at,
        acknowledged_by=incident.acknowledged_by,
        ack_due_at=incident.ack_due_at,
        next_update_due_at=incident.next_update_due_at,
        resolve_target_at=incident.resolve_target_at,
        identified_at=incident.identified_at,
        monitoring_at=incident.monitoring_at,
        resolved_at=incident.resolved_at,
        components=[
            AffectedComponentOut(
                component_id=a.component.id,
                name=a.component.name,
                status=a.row.status,
                current_status=a.component.status,
            )
            for a in affected
        ],
        postmortem=postmortem,
        links=IncidentLinks(
            self=here,
            updates=f"{here}/updates",
            acknowledge=f"{here}/acknowledge",
            resolve=f"{here}/resolve",
            postmortem=f"{here}/postmortem",
            rollback=f"{here}/rollback",
        ),
    )


def entry_out(entry: IncidentUpdateRecord) -> TimelineEntry:
    return TimelineEntry(
        id=entry.id,
        status=entry.status,
        severity=entry.severity,
        body=entry.body,
        visibility=entry.visibility,
        created_by=entry.created_by,
        created_at=entry.created_at,
    )


def recent_out(incident: Incident, recent: service.RecentDeployment) -> RecentDeployment:
    return RecentDeployment(
        id=recent.deployment.id,
        kind=recent.deployment.kind,
        environment=recent.deployment.environment,
        services=[
            DeployedService(
                name=t.service,
                version=t.version,
                previous_version=t.previous_version,
                changed=t.touched,
            )
            for t in recent.targets
        ],
        status=recent.run.status,
        requested_by=recent.deployment.requested_by,
        created_at=recent.deployment.created_at,
        finished_at=recent.run.finished_at,
        links=RecentDeploymentLinks(
            self=deployment_location(recent.deployment.id),
            rollback=f"{location(incident.id)}/rollback",
        ),
    )


def incident_detail(
    incident: Incident,
    affected: Sequence[service.Affected],
    timeline: Sequence[IncidentUpdateRecord],
    recent: Sequence[service.RecentDeployment],
) -> IncidentDetail:
    return IncidentDetail(
        **incident_out(incident, affected).model_dump(),
        timeline=[entry_out(e) for e in timeline],
        recent_deployments=[recent_out(incident, r) for r in recent],
    )
