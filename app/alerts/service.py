"""Receiving an Alertmanager notification: store its alerts (deduplicated), then open,
update or resolve the group's incident, unless a maintenance window holds the alerts back.

A window holds back the components it covers: an alert wholly covered opens nothing, an
alert that also concerns other components claims those. Only a new or changed alert (first
seen, firing again or from another ``startsAt``, another severity, other components held
back) may open an incident or raise one: a re-send of a still-firing alert changes
nothing, so it neither undoes what an operator set nor reopens an incident an operator
resolved. An alert that resolves while others of its group fire gives back the components
only it called for. The public title and entries name components (or the ``summary``
annotation, written for readers); alert names, labels, severities and thresholds go to
internal entries.

One notification is one transaction: the alert rows, the incident's change (with its
component claims and events) and one audit record (``alert.receive``) commit together
or not at all. A notification of a group waits on the alert rows of the one before it
(``store.upsert``), so two copies sent at once open one incident; the components it
may change are locked in one order before the incident changes
(``store.lock_components``). Nothing here depends on a service outside this process:
the only failures left for the sender to retry are the database's (answered 503 with
``Retry-After`` by the application's error handlers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts import mapping, store
from app.alerts.schemas import AlertmanagerNotification, AlertReceipt
from app.alerts.store import AlertRow
from app.audit import service as audit_service
from app.auth.principal import Principal
from app.components.models import Component
from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.incidents import service as incidents
from app.incidents.models import Incident
from app.maintenances import service as maintenances
from app.maintenances.models import Maintenance
from app.thresholds import service as thresholds
from app.thresholds.models import Threshold

SOURCE = "alertmanager"
DEDUPE_PREFIX = "alertmanager:"
TITLE_MAX = 200
MESSAGE_MAX = 4000
MESSAGE_ALERTS = 20  # alerts named in a timeline message; the rest are counted

IncidentAction = Literal["opened", "updated", "resolved", "none"]


def dedupe_key(group_key_hash: str) -> str:
    """The incident key of an alert group (the groupKey itself may be long)."""
    return DEDUPE_PREFIX + group_key_hash


async def receive(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    notification: AlertmanagerNotification,
    *,
    now: dt.datetime | None = None,
) -> AlertReceipt:
    """Store, dedupe and act on one notification, in ``uow``'s transaction."""
    session = uow.session
    moment = now or utcnow()
    key_hash = mapping.group_key_hash(notification.group_key)

    known = await thresholds.load(session)
    components = await _components(session)
    rows = _rows(notification, known, components, context.settings.alerts.value_annotation)
    stored = await store.upsert(
        session,
        group_key=notification.group_key,
        group_key_hash=key_hash,
        receiver=notification.receiver,
        rows=rows,
        now=moment,
    )

    firing = [r for r in rows if r.status == "firing"]
    windows = await maintenances.covering(
        session, {c for row in firing for c in row.components}, moment
    )
    suppressed: dict[str, list[AlertRow]] = {}
    active: list[_Active] = []
    for row in firing:
        covered = [windows[c] for c in row.components if c in windows]
        window = _ending_last(covered)
        uncovered = [c for c in row.components if c not in windows]
        if window is not None and not uncovered:
            suppressed.setdefault(window.id, []).append(row)
        else:
            held_by = window.id if window is not None else None
            active.append(_Active(row, stored[row.fingerprint], uncovered, held_by))
    for window_id, held in suppressed.items():
        await store.suppress(session, [stored[r.fingerprint] for r in held], window_id)

    key = dedupe_key(key_hash)
    open_id = await session.scalar(select(Incident.id).where(Incident.dedupe_key == key))
    raising: list[_Active] = []  # new or changed: they may open, raise or extend
    kept: list[_Active] = []  # re-sends of the open incident's alerts: they change nothing
    for alert in active:
        if _refired(alert):
            raising.append(alert)
        elif alert.stored.incident_id is None or alert.stored.incident_id == open_id:
            (raising if _changed(alert) else kept).append(alert)
        # else: a re-send of an alert whose incident an operator closed: left alone
    # Alerts that stopped firing while their group goes on: their components are given back.
    released = [
        r
        for r in rows
        if r.status == "resolved"
        and open_id is not None
        and stored[r.fingerprint].incident_id == open_id
        and (previous := stored[r.fingerprint].previous) is not None
        and previous.status == "firing"
    ]
    if notification.status == "resolved":
        released = []

    if raising or released or notification.status == "resolved":
        # Held from here to the commit: as short a stretch as the incident's change.
        await store.lock_components(session, (c for row in rows for c in row.components))
    action: IncidentAction = "none"
    incident_id: str | None = None
    created = False
    if raising:
        raised = [a.row for a in raising]
        ids = {c for a in raising for c in a.components}
        incident, created = await incidents.open_or_update(
            uow,
            context,
            principal,
            dedupe_key=key,
            title=_title(raised, ids, components),
            severity=mapping.highest(r.severity or mapping.DEFAULT_SEVERITY for r in raised),
            source=SOURCE,
            components=mapping.component_statuses(
                (a.row.severity or mapping.DEFAULT_SEVERITY, a.components) for a in raising
            ),
            message=_public_message("firing", ids, components),
            internal_note=_message("firing", notification, raised),
        )
        incident_id = incident.id
        action = "opened" if created else "updated"
        for held_by in sorted({a.held_by for a in raising}, key=lambda w: w or ""):
            await store.link_incident(
                session, [a.stored for a in raising if a.held_by == held_by], incident.id, held_by
            )
    elif kept:
        incident_id = open_id
        action = "updated"
    if released:
        eased = await _release(
            uow, context, principal, notification, key, open_id, released, components, moment
        )
        if eased is not None and action == "none":
            incident_id, action = eased.id, "updated"
    elif notification.status == "resolved":
        ids = {c for row in rows for c in row.components}
        resolved = await incidents.alert_resolved(
            uow,
            context,
            principal,
            dedupe_key=key,
            message=_public_message("resolved", ids, components),
            internal_note=_message("resolved", notification, rows),
        )
        if resolved is not None:
            incident_id = resolved.id
            action = "resolved"

    receipt = AlertReceipt(
        group_key_hash=key_hash,
        alerts=len(rows),
        new_alerts=sum(1 for s in stored.values() if s.received_count == 1),
        firing=len(firing),
        resolved=len(rows) - len(firing),
        suppressed=sum(len(held) for held in suppressed.values()),
        suppressed_by=sorted(suppressed),
        incident_id=incident_id,
        incident_created=created,
        incident_action=action,
    )
    await audit_service.record(
        session,
        principal,
        action="alert.receive",
        resource_type="alert_group",
        resource_id=key_hash,
        summary={
            "receiver": notification.receiver,
            "status": notification.status,
            "truncated_alerts": notification.truncated_alerts,
            **receipt.model_dump(exclude={"status", "group_key_hash"}),
        },
    )
    return receipt


@dataclass
class _Active:
    """A firing alert no window holds back whole: the components it claims (those no
    window covers) and the window holding back the others."""

    row: AlertRow
    stored: store.Stored
    components: list[str]
    held_by: str | None


def _ending_last(windows: Sequence[Maintenance]) -> Maintenance | None:
    """The window ending last (the first by id of those ending together)."""
    ordered = sorted(windows, key=lambda w: w.id)
    return max(ordered, key=lambda w: w.scheduled_until) if ordered else None


def _refired(alert: _Active) -> bool:
    """A new firing: an alert first seen, or firing again (resolved before, or from
    another ``startsAt``); it may open an incident after an operator closed the last."""
    previous = alert.stored.previous
    return (
        previous is None or previous.status != "firing" or previous.starts_at != alert.row.starts_at
    )


def _changed(alert: _Active) -> bool:
    """A firing alert that changed since its last notification: no incident yet (a window
    held it back), another severity, or other components held back. A plain re-send is no
    change, and never undoes what an operator set on the incident."""
    previous = alert.stored.previous
    return (
        previous is None
        or alert.stored.incident_id is None
        or previous.severity != alert.row.severity
        or alert.stored.suppressed_by != alert.held_by
    )


async def _release(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    notification: AlertmanagerNotification,
    key: str,
    incident_id: str | None,
    released: Sequence[AlertRow],
    components: Sequence[mapping.ComponentRef],
    now: dt.datetime,
) -> Incident | None:
    """Some alerts of the open incident ``key`` resolved while others of the group still
    fire: each component the resolved ones concerned takes the status the alerts still
    firing call for (no better than it is), or is given back when none does."""
    session = uow.session
    group = await store.group(session, mapping.group_key_hash(notification.group_key))
    still = [
        (a.severity or mapping.DEFAULT_SEVERITY, mapping.components_for(a.labels, components))
        for a in group
        if a.status == "firing" and a.incident_id is not None and a.incident_id == incident_id
    ]
    windows = await maintenances.covering(session, {c for _, ids in still for c in ids}, utcnow())
    wanted = mapping.component_statuses(
        (severity, [c for c in ids if c not in windows]) for severity, ids in still
    )
    targets = {c: wanted.get(c) for row in released for c in row.components}
    if not targets:
        return None
    names = {c.id: c.name for c in components}
    recovered = sorted(names[c] for c, status in targets.items() if status is None)
    if recovered:
        verb = "has" if len(recovered) == 1 else "have"
        message = f"{', '.join(recovered)} {verb} recovered; we continue to investigate."
    else:
        eased = ", ".join(sorted(names[c] for c in targets))
        message = f"The problem affecting {eased} has eased; we continue to investigate."
    return await incidents.alert_partly_resolved(
        uow,
        context,
        principal,
        dedupe_key=key,
        components=targets,
        message=message,
        internal_note=_message("resolved", notification, released),
    )


async def _components(session: AsyncSession) -> list[mapping.ComponentRef]:
    rows = await session.execute(select(Component.id, Component.name, Component.services))
    return [
        mapping.ComponentRef(id=id_, name=name, services=tuple(services or ()))
        for id_, name, services in rows.all()
    ]


def _rows(
    notification: AlertmanagerNotification,
    known: Mapping[str, Threshold],
    components: Sequence[mapping.ComponentRef],
    value_annotation: str,
) -> list[AlertRow]:
    """The notification's alerts as rows (the last of two with one fingerprint wins)."""
    by_fingerprint: dict[str, AlertRow] = {}
    for alert in notification.alerts:
        labels = {**(notification.common_labels or {}), **(alert.labels or {})}
        annotations = {**(notification.common_annotations or {}), **(alert.annotations or {})}
        assessment = mapping.assess(
            known,
            labels,
            annotations,
            value_annotation=value_annotation,
        )
        fingerprint = mapping.fingerprint(alert.fingerprint, labels)
        by_fingerprint[fingerprint] = AlertRow(
            fingerprint=fingerprint,
            status=alert.status,
            alertname=labels.get("alertname", ""),
            labels=labels,
            annotations=annotations,
            starts_at=mapping.moment(alert.starts_at),
            ends_at=mapping.moment(alert.ends_at),
            generator_url=alert.generator_url,
            severity=assessment.severity,
            threshold=assessment.threshold,
            components=mapping.components_for(labels, components),
        )
    return list(by_fingerprint.values())


def _title(
    alerts: Sequence[AlertRow], ids: Collection[str], components: Sequence[mapping.ComponentRef]
) -> str:
    """The public title: the first alert's ``summary`` annotation (written for readers),
    else the components affected; never the alerts' names or the group's labels (those go
    to the internal entry, :func:`_message`)."""
    for row in alerts:
        summary = row.annotations.get("summary", "").strip()
        if summary:
            return _line(summary, TITLE_MAX)
    return _line(f"Problem affecting {_affected(ids, components)}", TITLE_MAX)


def _affected(ids: Collection[str], components: Sequence[mapping.ComponentRef]) -> str:
    names = sorted(c.name for c in components if c.id in ids)
    return ", ".join(names) if names else "some of our services"


def _public_message(
    state: str, ids: Collection[str], components: Sequence[mapping.ComponentRef]
) -> str:
    """What readers of the status page see: the components, never the alerts' names,
    labels, severities or thresholds (those go to an internal entry, :func:`_message`)."""
    affected = _affected(ids, components)
    if state == "resolved":
        return f"The problem affecting {affected} has cleared; we are monitoring."
    return f"We are investigating a problem affecting {affected}."


def _message(state: str, notification: AlertmanagerNotification, alerts: Sequence[AlertRow]) -> str:
    lines = [
        f"Alertmanager ({notification.receiver or 'receiver'}): {len(alerts)} alert(s) {state}."
    ]
    labels = sorted((notification.group_labels or {}).items())
    group_labels = ", ".join(f"{k}={v}" for k, v in labels)
    if group_labels:
        lines.append(_line(f"Group: {group_labels}", 1000))
    for row in alerts[:MESSAGE_ALERTS]:
        detail = [f"severity {row.severity}"]
        if row.threshold:
            detail.append(f"threshold {row.threshold}")
        description = row.annotations.get("summary") or row.annotations.get("description")
        text = f"- {row.alertname or 'alert'} ({', '.join(detail)})"
        if description:
            text += ": " + _line(description, 300)
        lines.append(text)
    if len(alerts) > MESSAGE_ALERTS:
        lines.append(f"- and {len(alerts) - MESSAGE_ALERTS} more")
    if notification.truncated_alerts:
        lines.append(f"({notification.truncated_alerts} alert(s) left out by Alertmanager)")
    return "\n".join(lines)[:MESSAGE_MAX]


def _line(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
