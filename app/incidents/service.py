"""Incidents: declare, change, update, acknowledge, resolve, write the postmortem; open
or update one from an alert group (``open_or_update``, ``alert_partly_resolved``,
``alert_resolved``) or from a run that failed; list its recent deployments and roll one back.

Every change happens in the caller's unit of work with its timeline entry, the claims
its components' statuses follow (:mod:`app.components.claims`), its event, the public
status revision and (for the routes) its audit record.

Status machine: ``investigating → identified → monitoring → resolved → postmortem``.
Any move between the three open statuses is allowed (monitoring → investigating: "it
came back"); ``resolved`` is final but for publishing the postmortem.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.audit.service import RunActor
from app.auth.principal import Principal
from app.components import claims, revision
from app.components.models import Component, ComponentStatusClaim
from app.components.vocabulary import (
    CLOSED_INCIDENT,
    SEVERITIES,
    SEVERITY_COMPONENT_STATUS,
    SEVERITY_IMPACT,
    worst_status,
)
from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.core.errors import (
    AppError,
    ConcurrentChange,
    NotFound,
    PreconditionFailed,
    is_unique_violation,
)
from app.core.ids import new_id
from app.core.pagination import CursorParams, paginate
from app.core.paths import V1
from app.core.redaction import redact_text
from app.core.settings import IncidentSettings
from app.deployments import service as deployment_service
from app.deployments.models import Deployment, DeploymentTarget
from app.incidents import clocks
from app.incidents.events import (
    INCIDENT_CREATED,
    INCIDENT_RESOLVED,
    INCIDENT_UPDATED,
    IncidentChanged,
)
from app.incidents.models import Incident, IncidentComponent, IncidentUpdateRecord
from app.outbox.service import add_event
from app.runs.models import Run, RunKind, RunStatus

OPEN_STATUSES = ("investigating", "identified", "monitoring")
# Where each status may go by an update (postmortem only by publishing one).
TRANSITIONS: dict[str, frozenset[str]] = {
    "investigating": frozenset(OPEN_STATUSES) | {"resolved"},
    "identified": frozenset(OPEN_STATUSES) | {"resolved"},
    "monitoring": frozenset(OPEN_STATUSES) | {"resolved"},
    "resolved": frozenset({"resolved"}),
    "postmortem": frozenset({"postmortem"}),
}
DEFAULT_MESSAGE = "We are investigating this issue."


class IncidentNotFound(NotFound):
    type = "/problems/incident-not-found"
    title = "Incident not found"


class IllegalTransition(AppError):
    type = "/problems/illegal-incident-transition"
    title = "Illegal incident status change"
    status = 409


class IncidentClosed(AppError):
    type = "/problems/incident-closed"
    title = "The incident is resolved"
    status = 409


class PostmortemTooEarly(AppError):
    type = "/problems/postmortem-too-early"
    title = "The incident is not resolved yet"
    status = 409


class UnknownComponent(NotFound):
    """A component named in the request does not exist (404, like an unknown service of
    a deployment; ``errors`` says which)."""

    type = "/problems/unknown-component"
    title = "Unknown component"


class UnrelatedDeployment(AppError):
    type = "/problems/unrelated-deployment"
    title = "Not one of the incident's recent deployments"
    status = 409


def etag(incident: Incident) -> str:
    return f'"{incident.id}.{incident.version}"'


def check_match(incident: Incident, if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    tags = [tag.strip().removeprefix("W/") for tag in if_match.split(",")]
    if etag(incident) not in tags:
        raise PreconditionFailed("The incident changed since it was read; read it again and retry")


def _rank(severity: str) -> int:
    """Lower is more severe (P0 is 0)."""
    return SEVERITIES.index(severity)


# -- reading -------------------------------------------------------------------------


async def get(session: AsyncSession, incident_id: str) -> Incident:
    incident = await session.get(Incident, incident_id)
    if incident is None:
        raise IncidentNotFound(f"No incident {incident_id}")
    return incident


async def _locked(session: AsyncSession, incident_id: str) -> Incident:
    incident = await session.scalar(
        select(Incident)
        .where(Incident.id == incident_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if incident is None:
        raise IncidentNotFound(f"No incident {incident_id}")
    return incident


@dataclass(frozen=True)
class Affected:
    """A component an incident affects: the status the incident set it to, and the
    component as it is."""

    row: IncidentComponent
    component: Component


async def affected(session: AsyncSession, incident_ids: Sequence[str]) -> dict[str, list[Affected]]:
    if not incident_ids:
        return {}
    found: dict[str, list[Affected]] = {i: [] for i in incident_ids}
    rows = await session.execute(
        select(IncidentComponent, Component)
        .join(Component, Component.id == IncidentComponent.component_id)
        .where(IncidentComponent.incident_id.in_(list(incident_ids)))
        .order_by(Component.group_name, Component.position, Component.name)
    )
    for row, component in rows.all():
        found[row.incident_id].append(Affected(row, component))
    return found


async def timeline(session: AsyncSession, incident_id: str) -> list[IncidentUpdateRecord]:
    return list(
        (
            await session.scalars(
                select(IncidentUpdateRecord)
                .where(IncidentUpdateRecord.incident_id == incident_id)
                .order_by(IncidentUpdateRecord.created_at, IncidentUpdateRecord.id)
            )
        ).all()
    )


async def claims_held(session: AsyncSession, incident_id: str) -> bool:
    count = await session.scalar(
        select(func.count())
        .select_from(ComponentStatusClaim)
        .where(
            ComponentStatusClaim.source_type == claims.INCIDENT,
            ComponentStatusClaim.source_id == incident_id,
        )
    )
    return bool(count)


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    severity: str | None = None
    open: bool | None = None


def list_statement(filters: Filters) -> Select[Any]:
    statement = select(Incident)
    if filters.status is not None:
        statement = statement.where(Incident.status == filters.status)
    if filters.severity is not None:
        statement = statement.where(Incident.severity == filters.severity)
    if filters.open is True:
        statement = statement.where(Incident.status.not_in(tuple(CLOSED_INCIDENT)))
    elif filters.open is False:
        statement = statement.where(Incident.status.in_(tuple(CLOSED_INCIDENT)))
    return statement


async def list_page(
    session: AsyncSession, page: CursorParams, filters: Filters
) -> tuple[Sequence[Incident], str | None]:
    """Newest first, keyset-paginated."""
    return await paginate(
        session, list_statement(filters), page, created_at=Incident.created_at, id=Incident.id
    )


# -- events ----------------------------------------------------------------------------


async def _latest_public(session: AsyncSession, incident_id: str) -> IncidentUpdateRecord | None:
    return await session.scalar(
        select(IncidentUpdateRecord)
        .where(
            IncidentUpdateRecord.incident_id == incident_id,
            IncidentUpdateRecord.visibility == "public",
        )
        .order_by(IncidentUpdateRecord.created_at.desc(), IncidentUpdateRecord.id.desc())
        .limit(1)
    )


async def changed_data(
    session: AsyncSession, incident: Incident, latest: IncidentUpdateRecord | None = None
) -> dict[str, Any]:
    """The data of ``incident.created|updated|resolved``: the incident as it is now and
    its latest public update (``latest``, or the one stored)."""
    await session.flush()
    latest = latest or await _latest_public(session, incident.id)
    components = (await affected(session, [incident.id]))[incident.id]
    return IncidentChanged.model_validate(
        {
            "incident_id": incident.id,
            "name": incident.title,
            "status": incident.status,
            "severity": incident.severity,
            "impact": incident.impact,
            "components": [
                {
                    "component_id": a.component.id,
                    "name": a.component.name,
                    "status": a.component.status,
                    "showcase": a.component.showcase,
                }
                for a in components
            ],
            "latest_update": {
                "id": latest.id if latest else incident.id,
                "body": latest.body if latest else incident.title,
                "created_at": latest.created_at if latest else incident.created_at,
            },
            "created_at": incident.created_at,
            "updated_at": incident.updated_at,
            "monitoring_at": incident.monitoring_at,
            "resolved_at": incident.resolved_at,
            "links": {"self": f"{V1}/incidents/{incident.id}"},
        }
    ).model_dump(mode="json")


async def _announce(
    session: AsyncSession,
    incident: Incident,
    event_type: str,
    latest: IncidentUpdateRecord | None = None,
) -> None:
    data = await changed_data(session, incident, latest)
    # Each type written literally: the event catalog's test reads them from the source.
    if event_type == INCIDENT_CREATED:
        await add_event(session, "incident.created", data)
    elif event_type == INCIDENT_RESOLVED:
        await add_event(session, "incident.resolved", data)
    else:
        await add_event(session, "incident.updated", data)
    await revision.bump(session)


# -- writing ---------------------------------------------------------------------------


async def known_components(session: AsyncSession, ids: Sequence[str], field: str) -> None:
    """Refuse component ids that do not exist (422, naming each)."""
    wanted = sorted(set(ids))
    if not wanted:
        return
    found = set((await session.scalars(select(Component.id).where(Component.id.in_(wanted)))).all())
    missing = [i for i in wanted if i not in found]
    if missing:
        raise UnknownComponent(
            f"No component {', '.join(missing)}",
            errors=[
                {"loc": ["body", field], "msg": f"no component {m}", "type": "unknown_component"}
                for m in missing
            ],
        )


def _entry(
    incident: Incident,
    *,
    body: str,
    by: str,
    now: dt.datetime,
    visibility: str = "public",
    severity: str | None = None,
) -> IncidentUpdateRecord:
    return IncidentUpdateRecord(
        incident_id=incident.id,
        status=incident.status,
        severity=severity,
        body=body,
        visibility=visibility,
        created_by=by,
        created_at=now,
    )


async def _claim(session: AsyncSession, incident: Incident, now: dt.datetime) -> None:
    """The incident claims the status it set each of its components to (none once closed)."""
    wanted: dict[str, str] = {}
    if incident.status not in CLOSED_INCIDENT:
        rows = await session.scalars(
            select(IncidentComponent).where(IncidentComponent.incident_id == incident.id)
        )
        wanted = {row.component_id: row.status for row in rows}
    await claims.set_claims(session, claims.INCIDENT, incident.id, wanted, now=now)


async def _release(session: AsyncSession, incident: Incident, now: dt.datetime) -> None:
    await claims.set_claims(session, claims.INCIDENT, incident.id, {}, now=now)


async def _deadlines(session: AsyncSession, settings: IncidentSettings, incident: Incident) -> None:
    await session.flush()
    latest = await clocks.last_entries(session, [incident.id])
    clocks.set_deadlines(settings, incident, latest.get(incident.id, incident.created_at))


def _touch(incident: Incident, now: dt.datetime) -> None:
    incident.updated_at = now
    incident.version += 1


def _set_status(incident: Incident, status: str, now: dt.datetime) -> None:
    if status == incident.status:
        return
    incident.status = status
    if status == "identified" and incident.identified_at is None:
        incident.identified_at = now
    elif status == "monitoring":
        incident.monitoring_at = now
    elif status == "resolved":
        incident.resolved_at = now
        incident.dedupe_key = None  # a later firing of its alert opens a new incident


def check_transition(incident: Incident, status: str) -> None:
    if status == "postmortem" and incident.status != "postmortem":
        raise IllegalTransition(
            "An incident moves to postmortem by publishing its postmortem "
            f"(PUT {V1}/incidents/{incident.id}/postmortem)"
        )
    if status not in TRANSITIONS[incident.status]:
        raise IllegalTransition(
            f"Incident {incident.id} is {incident.status}; it cannot move to {status}"
        )


async def _open(
    session: AsyncSession,
    settings: IncidentSettings,
    by: str,
    *,
    title: str,
    severity: str,
    source: str,
    components: Mapping[str, str | None],
    message: str,
    commander: str | None = None,
    dedupe_key: str | None = None,
    acknowledge: bool = False,
    now: dt.datetime,
    incident: Incident | None = None,
) -> Incident:
    """A new incident (``incident``: its row, already inserted), its first public entry,
    its components and their claims, its clocks and ``incident.created``."""
    if incident is None:
        incident = _new(title, severity, source, by, dedupe_key, commander, now)
        session.add(incident)
    if acknowledge:
        incident.acknowledged_at = now
        incident.acknowledged_by = by
    for component_id, status in sorted(components.items()):
        session.add(
            IncidentComponent(
                incident_id=incident.id,
                component_id=component_id,
                status=status or SEVERITY_COMPONENT_STATUS[severity],
            )
        )
    first = _entry(incident, body=message, by=by, now=now, severity=severity)
    session.add(first)
    await session.flush()
    await _claim(session, incident, now)
    await _deadlines(session, settings, incident)
    await _announce(session, incident, INCIDENT_CREATED, first)
    return incident


def _new(
    title: str,
    severity: str,
    source: str,
    by: str,
    dedupe_key: str | None,
    commander: str | None,
    now: dt.datetime,
) -> Incident:
    return Incident(
        id=new_id(),
        title=title,
        severity=severity,
        impact=SEVERITY_IMPACT[severity],
        status="investigating",
        source=source,
        dedupe_key=dedupe_key,
        commander=commander,
        created_by=by,
        created_at=now,
        updated_at=now,
        version=1,
        action_items=[],
    )


async def create(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    *,
    title: str,
    severity: str,
    components: Mapping[str, str | None],
    message: str | None,
    commander: str | None,
    acknowledge: bool,
) -> Incident:
    """Declare an incident (``POST /v1/incidents``); audited."""
    session = uow.session
    await known_components(session, list(components), "components")
    incident = await _open(
        session,
        context.settings.incidents,
        principal.actor,
        title=title,
        severity=severity,
        source="manual",
        components=components,
        message=message or DEFAULT_MESSAGE,
        commander=commander,
        acknowledge=acknowledge,
        now=utcnow(),
    )
    await audit_service.record(
        session,
        principal,
        action="incident.create",
        resource_type="incident",
        resource_id=incident.id,
        summary={"severity": severity, "components": sorted(components)},
    )
    return incident


async def _locked_by_key(session: AsyncSession, dedupe_key: str) -> Incident | None:
    """The incident holding ``dedupe_key``, locked until the transaction ends."""
    return await session.scalar(
        select(Incident)
        .where(Incident.dedupe_key == dedupe_key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def open_or_update(
    uow: UnitOfWork,
    context: AppContext,
    actor: Principal,
    *,
    dedupe_key: str,
    title: str,
    severity: str,
    source: str,
    components: Mapping[str, str],
    message: str,
    internal_note: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[Incident, bool]:
    """The open incident with ``dedupe_key`` updated, or a new one: ``(incident,
    created)``.

    An open incident (not resolved) with the key gets the severity raised when
    ``severity`` is higher, the components merged (the worse status of the two for a
    component it already has), back to ``investigating`` when it was ``monitoring`` (it
    came back), and a public timeline entry with ``message``: only when something
    changed. Otherwise a new incident opens (``source``: ``alertmanager``, ``deployment``,
    ``backup``…). ``components``: component id → the status to set it to. Concurrent
    calls with one key open one incident (the key is unique; the loser updates it).
    ``internal_note`` (operators only) is added beside ``message`` whenever that is.
    Not audited here: the caller records its own request.
    """
    if severity not in SEVERITIES:
        raise ValueError(f"not a severity: {severity!r}")
    session = uow.session
    moment = now or utcnow()
    settings = context.settings.incidents
    await known_components(session, list(components), "components")
    for _ in range(3):
        incident = await _locked_by_key(session, dedupe_key)
        if incident is not None:
            if await _merge(
                session, settings, actor, incident, severity, components, message, moment
            ):
                _note(session, incident, internal_note, actor.actor, moment)
            return incident, False
        fresh = _new(title[:200], severity, source, actor.actor, dedupe_key, None, moment)
        try:
            async with session.begin_nested():
                session.add(fresh)
                await session.flush()
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            continue  # opened meanwhile by a concurrent call: update that one
        await _open(
            session,
            settings,
            actor.actor,
            title=fresh.title,
            severity=severity,
            source=source,
            components=components,
            message=message,
            now=moment,
            incident=fresh,
        )
        _note(session, fresh, internal_note, actor.actor, moment)
        return fresh, True
    raise ConcurrentChange(f"Incident {dedupe_key!r} kept changing; retry")


async def _merge(
    session: AsyncSession,
    settings: IncidentSettings,
    actor: Principal,
    incident: Incident,
    severity: str,
    components: Mapping[str, str],
    message: str,
    now: dt.datetime,
) -> bool:
    """Whether anything changed (then a public entry says ``message``)."""
    changed = False
    raised: str | None = None
    if _rank(severity) < _rank(incident.severity):
        incident.severity = raised = severity
        incident.impact = SEVERITY_IMPACT[severity]
        changed = True
    rows = {
        row.component_id: row
        for row in await session.scalars(
            select(IncidentComponent).where(IncidentComponent.incident_id == incident.id)
        )
    }
    for component_id, status in sorted(components.items()):
        row = rows.get(component_id)
        if row is None:
            session.add(
                IncidentComponent(incident_id=incident.id, component_id=component_id, status=status)
            )
            changed = True
        elif worst_status(row.status, status) != row.status:
            row.status = worst_status(row.status, status)
            changed = True
    if incident.status == "monitoring":
        _set_status(incident, "investigating", now)
        changed = True
    if not changed:
        return False
    entry = _entry(incident, body=message, by=actor.actor, now=now, severity=raised)
    session.add(entry)
    _touch(incident, now)
    await session.flush()
    await _claim(session, incident, now)
    await _deadlines(session, settings, incident)
    await _announce(session, incident, INCIDENT_UPDATED, entry)
    return True


def _note(
    session: AsyncSession, incident: Incident, body: str | None, by: str, now: dt.datetime
) -> None:
    """An internal timeline entry (operators only: never on the status page, no event)."""
    if body:
        session.add(
            _entry(
                incident,
                body=body[:4000],
                by=by,
                now=now,
                visibility="internal",
            )
        )


async def alert_resolved(
    uow: UnitOfWork,
    context: AppContext,
    actor: Principal,
    *,
    dedupe_key: str,
    message: str,
    internal_note: str | None = None,
    now: dt.datetime | None = None,
) -> Incident | None:
    """The open incident with ``dedupe_key`` moves to ``monitoring`` and drops its
    component claims (the components come back to what else holds them); None when no
    open incident has the key. Nothing changes when it is already there. Not audited
    here: the caller records its own request."""
    session = uow.session
    moment = now or utcnow()
    incident = await _locked_by_key(session, dedupe_key)
    if incident is None or incident.status in CLOSED_INCIDENT:
        return None
    if incident.status == "monitoring" and not await claims_held(session, incident.id):
        return incident
    _set_status(incident, "monitoring", moment)
    entry = _entry(incident, body=message, by=actor.actor, now=moment)
    session.add(entry)
    _touch(incident, moment)
    await session.flush()
    await _release(session, incident, moment)
    await _deadlines(session, context.settings.incidents, incident)
    await _announce(session, incident, INCIDENT_UPDATED, entry)
    _note(session, incident, internal_note, actor.actor, moment)
    return incident


async def alert_partly_resolved(
    uow: UnitOfWork,
    context: AppContext,
    actor: Principal,
    *,
    dedupe_key: str,
    components: Mapping[str, str | None],
    message: str,
    internal_note: str | None = None,
    now: dt.datetime | None = None,
) -> Incident | None:
    """Some alerts of the open incident with ``dedupe_key`` resolved while others still
    fire: each of ``components`` it has is eased to the status given (never made worse)
    or, for None, dropped from it (its claim released). A public entry with ``message``
    only when something changed; the incident's status stays. None when no open incident
    has the key. Not audited here: the caller records its own request."""
    session = uow.session
    moment = now or utcnow()
    incident = await _locked_by_key(session, dedupe_key)
    if incident is None or incident.status in CLOSED_INCIDENT:
        return None
    rows = {
        row.component_id: row
        for row in await session.scalars(
            select(IncidentComponent).where(IncidentComponent.incident_id == incident.id)
        )
    }
    changed = False
    for component_id, status in sorted(components.items()):
        row = rows.get(component_id)
        if row is None:
            continue
        if status is None:
            await session.delete(row)
            changed = True
        elif worst_status(row.status, status) == row.status and status != row.status:
            row.status = status
            changed = True
    if not changed:
        return incident
    entry = _entry(incident, body=message, by=actor.actor, now=moment)
    session.add(entry)
    _touch(incident, moment)
    await session.flush()
    await _claim(session, incident, moment)
    await _deadlines(session, context.settings.incidents, incident)
    await _announce(session, incident, INCIDENT_UPDATED, entry)
    _note(session, incident, internal_note, actor.actor, moment)
    return incident


# -- a run that ended badly opens an incident ------------------------------------------------

# The run kinds whose bad end opens an incident, with the statuses that count and where
# the incident comes from.
AUTO_OPEN: dict[str, tuple[frozenset[str], str, str]] = {
    RunKind.DEPLOYMENT.value: (frozenset({RunStatus.ERROR.value}), "deployment", "A deployment"),
    RunKind.ROLLBACK.value: (frozenset({RunStatus.ERROR.value}), "deployment", "A rollback"),
    RunKind.BACKUP_VERIFICATION.value: (
        frozenset({RunStatus.FAILURE.value, RunStatus.ERROR.value}),
        "backup",
        "A backup verification",
    ),
}


async def components_of_services(
    session: AsyncSession, services: Sequence[tuple[str, str]]
) -> list[Component]:
    """The components behind any of ``services`` (``(environment, service)``)."""
    wanted = {f"{environment}/{service}" for environment, service in services}
    if not wanted:
        return []
    rows = await session.scalars(select(Component).order_by(Component.name))
    return [c for c in rows if wanted & set(c.services or [])]


async def on_run_ended(uow: UnitOfWork, context: AppContext, run: Run) -> None:
    """A deployment or rollback that ended ``error`` (it failed and could not be rolled
    back) or a backup verification that failed opens an incident of the configured
    severity (``FORMULA_OPS_INCIDENTS__AUTO_OPEN``), or updates the one such runs of the
    same environment and services already opened; its components are those behind the
    services. The run's failure detail goes to an internal entry, never the public one."""
    settings = context.settings.incidents
    rule = AUTO_OPEN.get(run.kind)
    if not settings.auto_open or rule is None or run.status not in rule[0]:
        return
    _, source, what = rule
    session = uow.session
    targets = list(
        (
            await session.execute(
                select(DeploymentTarget.environment, DeploymentTarget.service)
                .where(DeploymentTarget.deployment_id == run.id)
                .order_by(DeploymentTarget.position)
            )
        ).all()
    )
    services = sorted({f"{environment}/{service}" for environment, service in targets})
    components = await components_of_services(session, targets)
    severity = settings.auto_open_severity
    status = SEVERITY_COMPONENT_STATUS[severity]
    where = ", ".join(services) or run.environment or "an environment"
    key = f"run:{run.kind}:{run.environment or '-'}:{','.join(services)}"[:200]
    actor = Principal.system(f"run:{run.id}")
    # The title and the first entry are public: they name components only, never the
    # environments, services or versions (those go to the internal entry below).
    names = ", ".join(c.name for c in components)
    title = (f"Problem after a change to {names}" if names else "Problem after a change")[:200]
    public = (
        f"We are investigating a problem after a change to {names}."
        if names
        else "We are investigating a problem after a change."
    )
    incident, created = await open_or_update(
        uow,
        context,
        actor,
        dedupe_key=key,
        title=title,
        severity=severity,
        source=source,
        components={c.id: status for c in components},
        message=public,
    )
    now = utcnow()
    session.add(
        _entry(
            incident,
            body=f"{what} of {where} (run {run.id}, {run.kind}) ended {run.status}: "
            f"{run.failure_type or 'no problem type'}: "
            f"{redact_text(run.failure_detail or 'no detail')}"[:4000],
            by=actor.actor,
            now=now,
            visibility="internal",
        )
    )
    await audit_service.record(
        session,
        RunActor(run.id, run.requested_by),
        action="incident.auto_open" if created else "incident.auto_update",
        resource_type="incident",
        resource_id=incident.id,
        summary={"run_id": run.id, "kind": run.kind, "status": run.status, "services": services},
    )
    await session.flush()


# -- the routes' changes -------------------------------------------------------------------


async def _audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    incident: Incident,
    summary: dict[str, Any],
) -> None:
    await audit_service.record(
        session,
        principal,
        action=action,
        resource_type="incident",
        resource_id=incident.id,
        summary=summary,
    )


async def _set_components(
    session: AsyncSession, incident: Incident, components: Mapping[str, str | None]
) -> bool:
    """Replace the incident's components (id → status; none: the severity's default).
    True when anything changed."""
    rows = {
        row.component_id: row
        for row in await session.scalars(
            select(IncidentComponent).where(IncidentComponent.incident_id == incident.id)
        )
    }
    changed = False
    for component_id, old in rows.items():
        if component_id not in components:
            await session.delete(old)
            changed = True
    for component_id, status in components.items():
        wanted = status or SEVERITY_COMPONENT_STATUS[incident.severity]
        row = rows.get(component_id)
        if row is None:
            session.add(
                IncidentComponent(incident_id=incident.id, component_id=component_id, status=wanted)
            )
            changed = True
        elif row.status != wanted:
            row.status = wanted
            changed = True
    await session.flush()
    return changed


async def change(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    incident_id: str,
    changes: Mapping[str, Any],
    if_match: str | None,
) -> Incident:
    """``PATCH``: title, severity, commander, components (the full list: id → status).
    A severity change recomputes the clocks; a component change re-claims (also while
    monitoring: the caller sets the statuses it wants). Closed incidents refuse (409)."""
    session = uow.session
    incident = await _locked(session, incident_id)
    check_match(incident, if_match)
    if incident.status in CLOSED_INCIDENT:
        raise IncidentClosed(f"Incident {incident.id} is {incident.status}; it no longer changes")
    components: Mapping[str, str | None] | None = changes.get("components")
    if components is not None:
        await known_components(session, list(components), "components")
    now = utcnow()
    public = False
    done: dict[str, Any] = {}
    if "title" in changes and changes["title"] != incident.title:
        incident.title = done["title"] = changes["title"]
        public = True
    if "commander" in changes and changes["commander"] != incident.commander:
        incident.commander = done["commander"] = changes["commander"]
    severity = changes.get("severity")
    if severity is not None and severity != incident.severity:
        incident.severity = done["severity"] = severity
        incident.impact = SEVERITY_IMPACT[severity]
        session.add(
            _entry(
                incident,
                body=f"Severity changed to {severity}.",
                by=principal.actor,
                now=now,
                visibility="internal",
                severity=severity,
            )
        )
        public = True
    if components is not None and await _set_components(session, incident, components):
        done["components"] = sorted(components)
        await _claim(session, incident, now)
        public = True
    if done:
        _touch(incident, now)
        await _deadlines(session, context.settings.incidents, incident)
        if public:
            await _announce(session, incident, INCIDENT_UPDATED)
    await _audit(session, principal, "incident.update", incident, {"changed": sorted(done)})
    return incident


async def add_update(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    incident_id: str,
    *,
    message: str,
    status: str | None = None,
    visibility: str = "public",
    action: str = "incident.add_update",
    acknowledge: bool = False,
) -> tuple[Incident, IncidentUpdateRecord]:
    """A timeline entry, optionally moving the status (409 on an illegal move). A public
    entry restarts the update clock and announces the incident; an internal one is for
    operators only and is not announced. Resolving drops the component claims."""
    session = uow.session
    incident = await _locked(session, incident_id)
    target = status or incident.status
    check_transition(incident, target)
    now = utcnow()
    before = incident.status
    _set_status(incident, target, now)
    if acknowledge and incident.acknowledged_at is None:
        incident.acknowledged_at = now
        incident.acknowledged_by = principal.actor
    entry = _entry(incident, body=message, by=principal.actor, now=now, visibility=visibility)
    session.add(entry)
    _touch(incident, now)
    await session.flush()
    if target != before and (target in CLOSED_INCIDENT or before == "monitoring"):
        await _claim(session, incident, now)  # closed: released; out of monitoring: again
    await _deadlines(session, context.settings.incidents, incident)
    if visibility == "public" or target != before:
        kind = INCIDENT_RESOLVED if target == "resolved" and before != target else INCIDENT_UPDATED
        await _announce(session, incident, kind)
    await _audit(
        session,
        principal,
        action,
        incident,
        {"status_before": before, "status": target, "visibility": visibility},
    )
    return incident, entry


async def acknowledge(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    incident_id: str,
    *,
    message: str | None = None,
) -> Incident:
    """Stops the acknowledgement clock; idempotent (the first acknowledgement counts).
    An internal timeline entry records who acknowledged."""
    session = uow.session
    incident = await _locked(session, incident_id)
    if incident.acknowledged_at is not None:
        await _audit(
            session,
            principal,
            "incident.acknowledge",
            incident,
            {"acknowledged_before": True, "acknowledged_by": incident.acknowledged_by},
        )
        return incident
    if incident.status in CLOSED_INCIDENT:
        raise IncidentClosed(f"Incident {incident.id} is {incident.status}")
    incident, _ = await add_update(
        uow,
        context,
        principal,
        incident_id,
        message=message or f"Acknowledged by {principal.name}.",
        visibility="internal",
        action="incident.acknowledge",
        acknowledge=True,
    )
    return incident


async def resolve(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    incident_id: str,
    *,
    message: str,
) -> Incident:
    """Resolved, with a public entry; the components come back; its key is freed. 409
    when it is already resolved."""
    session = uow.session
    incident = await _locked(session, incident_id)
    if incident.status in CLOSED_INCIDENT:
        raise IllegalTransition(f"Incident {incident.id} is already {incident.status}")
    incident, _ = await add_update(
        uow,
        context,
        principal,
        incident_id,
        message=message,
        status="resolved",
        action="incident.resolve",
    )
    return incident


async def put_postmortem(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    incident_id: str,
    *,
    body: str,
    action_items: list[dict[str, Any]],
    publish: bool,
    if_match: str | None,
) -> Incident:
    """Write the postmortem (markdown) and its action items; ``publish`` moves the
    incident to ``postmortem`` with a public entry carrying the document (what the
    status page shows). Only once resolved (409 before)."""
    session = uow.session
    incident = await _locked(session, incident_id)
    check_match(incident, if_match)
    if incident.status not in CLOSED_INCIDENT:
        raise PostmortemTooEarly(
            f"Incident {incident.id} is {incident.status}: resolve it before its postmortem"
        )
    now = utcnow()
    incident.postmortem_body = body
    incident.action_items = action_items
    _touch(incident, now)
    published = publish or incident.status == "postmortem"
    if published:
        _set_status(incident, "postmortem", now)
        incident.postmortem_published_at = now
        entry = _entry(incident, body=body, by=principal.actor, now=now)
        session.add(entry)
        await session.flush()
        await _announce(session, incident, INCIDENT_UPDATED, entry)
    await _audit(
        session,
        principal,
        "incident.postmortem",
        incident,
        {"published": published, "action_items": len(action_items)},
    )
    return incident


# -- deployments -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecentDeployment:
    deployment: Deployment
    run: Run
    targets: list[DeploymentTarget]


async def recent_deployments(
    session: AsyncSession,
    settings: IncidentSettings,
    incident: Incident,
    principal: Principal | None = None,
) -> list[RecentDeployment]:
    """Deployments (and rollbacks) of the incident's components' services requested in
    the lookback window before it opened, newest first (only the environments
    ``principal`` may see)."""
    components = (await affected(session, [incident.id]))[incident.id]
    pairs = sorted(
        {
            tuple(name.split("/", 1))
            for a in components
            for name in a.component.services or []
            if "/" in name
        }
    )
    if not pairs:
        return []
    since = incident.created_at - dt.timedelta(minutes=settings.deployment_lookback_minutes)
    matching = or_(
        *(
            and_(DeploymentTarget.environment == env, DeploymentTarget.service == svc)
            for env, svc in pairs
        )
    )
    rows = (
        await session.execute(
            select(Deployment, Run)
            .join(Run, Run.id == Deployment.id)
            .where(
                Deployment.created_at >= since,
                Deployment.created_at <= incident.created_at,
                Deployment.id.in_(select(DeploymentTarget.deployment_id).where(matching)),
            )
            .order_by(Deployment.created_at.desc(), Deployment.id.desc())
            .limit(50)
        )
    ).all()
    found = [
        (deployment, run)
        for deployment, run in rows
        if principal is None or principal.may_access_environment(deployment.environment)
    ]
    targets: dict[str, list[DeploymentTarget]] = {d.id: [] for d, _ in found}
    if found:
        for target in await session.scalars(
            select(DeploymentTarget)
            .where(DeploymentTarget.deployment_id.in_(list(targets)))
            .order_by(DeploymentTarget.position)
        ):
            targets[target.deployment_id].append(target)
    return [RecentDeployment(d, r, targets[d.id]) for d, r in found]


async def rollback(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    incident_id: str,
    deployment_id: str,
) -> deployment_service.Created:
    """Roll back one of the incident's recent deployments through the deployments
    capability (the same checks and pins as ``POST /v1/deployments/{id}/rollback``),
    with an internal timeline entry naming the rollback; audited (the rollback by the
    deployments, ``incident.rollback`` here)."""
    session = uow.session
    incident = await _locked(session, incident_id)
    recent = {
        r.deployment.id
        for r in await recent_deployments(session, context.settings.incidents, incident)
    }
    if deployment_id not in recent:
        raise UnrelatedDeployment(
            f"Deployment {deployment_id} is not one of incident {incident.id}'s recent deployments",
        )
    created = await deployment_service.rollback(uow, context, principal, deployment_id)
    now = utcnow()
    session.add(
        _entry(
            incident,
            body=f"Rolling back deployment {deployment_id} (rollback {created.run.id}).",
            by=principal.actor,
            now=now,
            visibility="internal",
        )
    )
    _touch(incident, now)
    await _audit(
        session,
        principal,
        "incident.rollback",
        incident,
        {"deployment_id": deployment_id, "rollback_id": created.run.id},
    )
    return created


@dataclass(frozen=True)
class Detail:
    incident: Incident
    affected: list[Affected]
    timeline: list[IncidentUpdateRecord]
    recent: list[RecentDeployment]


async def detail(
    session: AsyncSession,
    settings: IncidentSettings,
    principal: Principal | None,
    incident_id: str,
    *,
    internal: bool = True,
) -> Detail:
    """An incident with its components, timeline (``internal``: with operators' notes)
    and recent deployments."""
    await session.flush()
    incident = await get(session, incident_id)
    entries = await timeline(session, incident.id)
    if not internal:
        entries = [e for e in entries if e.visibility == "public"]
    return Detail(
        incident,
        (await affected(session, [incident.id]))[incident.id],
        entries,
        await recent_deployments(session, settings, incident, principal),
    )


async def check_clocks(context: AppContext, now: dt.datetime) -> list[tuple[str, str, str]]:
    """One pass of the response clocks at ``now`` (the worker's cron job, every 30 s; a
    test passes any time): every warning and breach due, each emitted once."""
    async with context.unit_of_work() as uow:
        return await clocks.check(uow.session, context.settings.incidents, now)
