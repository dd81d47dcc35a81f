"""Receiving an Alertmanager notification: store its alerts (deduplicated), then open,
update or resolve the group's incident, unless a maintenance window holds the alerts back.

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
from collections.abc import Mapping, Sequence
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
from app.maintenances import service as maintenances
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
    suppressed: dict[str, list[AlertRow]] = {}
    active: list[AlertRow] = []
    windows: dict[tuple[str, ...], str | None] = {}
    for row in firing:
        ids = tuple(row.components)
        if ids not in windows:
            window = await maintenances.suppressing(session, ids, moment) if ids else None
            windows[ids] = window.id if window is not None else None
        window_id = windows[ids]
        if window_id is None:
            active.append(row)
        else:
            suppressed.setdefault(window_id, []).append(row)
    for window_id, held in suppressed.items():
        await store.suppress(session, [stored[r.fingerprint] for r in held], window_id)

    key = dedupe_key(key_hash)
    if active or notification.status == "resolved":
        # Held from here to the commit: as short a stretch as the incident's change.
        await store.lock_components(session, (c for row in rows for c in row.components))
    action: IncidentAction = "none"
    incident_id: str | None = None
    created = False
    if active:
        severity = mapping.highest(r.severity or mapping.DEFAULT_SEVERITY for r in active)
        incident, created = await incidents.open_or_update(
            uow,
            context,
            principal,
            dedupe_key=key,
            title=_title(notification, active),
            severity=severity,
            source=SOURCE,
            components=mapping.component_statuses(
                (r.severity or mapping.DEFAULT_SEVERITY, r.components) for r in active
            ),
            message=_public_message("firing", active, components),
            internal_note=_message("firing", notification, active),
        )
        incident_id = incident.id
        action = "opened" if created else "updated"
        await store.link_incident(session, [stored[r.fingerprint] for r in active], incident.id)
    elif notification.status == "resolved":
        resolved = await incidents.alert_resolved(
            uow,
            context,
            principal,
            dedupe_key=key,
            message=_public_message("resolved", rows, components),
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


def _title(notification: AlertmanagerNotification, active: Sequence[AlertRow]) -> str:
    """The first alert's ``summary`` annotation, else its name and group labels."""
    for row in active:
        summary = row.annotations.get("summary", "").strip()
        if summary:
            return _line(summary, TITLE_MAX)
    name = active[0].alertname or "Alert"
    extra = ", ".join(
        f"{k}={v}" for k, v in sorted((notification.group_labels or {}).items()) if k != "alertname"
    )
    return _line(f"{name} ({extra})" if extra else name, TITLE_MAX)


def _public_message(
    state: str, alerts: Sequence[AlertRow], components: Sequence[mapping.ComponentRef]
) -> str:
    """What readers of the status page see: the components, never the alerts' names,
    labels, severities or thresholds (those go to an internal entry, :func:`_message`)."""
    ids = {c for row in alerts for c in row.components}
    names = sorted(c.name for c in components if c.id in ids)
    affected = ", ".join(names) if names else "some of our services"
    if state == "resolved":
        return f"The problem affecting {affected} has cleared; we are monitoring."
    return f"We are investigating a problem affecting {affected}."


def _message(state: str, notification: AlertmanagerNotification, alerts: Sequence[AlertRow]) -> str:
    lines = [
        f"Alertmanager ({notification.receiver or 'receiver'}): {len(alerts)} alert(s) {state}."
    ]
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
