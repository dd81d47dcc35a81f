"""Response clocks: when an incident must be acknowledged, updated and resolved, from
its severity and the configured policy (:class:`app.core.settings.IncidentSettings`).

Three clocks run while an incident is open:

- ``ack``: from opening to ``ack_due_at``; stops when it is acknowledged.
- ``update``: from the latest timeline entry to ``next_update_due_at``; every entry
  starts it again.
- ``resolve``: from opening to ``resolve_target_at``; stops when it is resolved.

A response time is ``immediate`` (due at once), ``next_business_day`` (the start of the
first Monday-to-Friday day after the one the clock started on, in the business time
zone) or a duration such as ``15m``. :func:`check` compares the clocks with ``now``
(passed in, so a test can drive it with any time) and emits ``incident.sla_warning``
once ``warning_share`` of a clock's time has passed and ``incident.sla_breached`` once
it is over: each once per incident, clock and deadline, even with several workers
(the :class:`IncidentClockEvent` primary key).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.components.vocabulary import CLOSED_INCIDENT
from app.core.paths import V1
from app.core.settings import IncidentSettings
from app.incidents.models import Incident, IncidentClockEvent, IncidentUpdateRecord
from app.outbox.service import add_event

SLA_WARNING = "incident.sla_warning"
SLA_BREACHED = "incident.sla_breached"
CLOCKS = ("ack", "update", "resolve")
_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
NEXT_BUSINESS_DAY = "next_business_day"


def response_time(settings: IncidentSettings, clock: str, severity: str) -> str:
    """The policy's response time of ``clock`` for ``severity`` (``15m``, ``immediate``…)."""
    value: str = getattr(settings, f"{clock}_{severity.lower()}")
    return value


def due(settings: IncidentSettings, clock: str, severity: str, start: dt.datetime) -> dt.datetime:
    """When ``clock`` of an incident of ``severity`` started at ``start`` is due."""
    value = response_time(settings, clock, severity)
    if value == "immediate":
        return start
    if value == NEXT_BUSINESS_DAY:
        return next_business_day(start, settings)
    match = _DURATION.match(value)
    if match is None:  # the settings' pattern admits nothing else
        raise ValueError(f"not a response time: {value!r}")
    return start + dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def next_business_day(start: dt.datetime, settings: IncidentSettings) -> dt.datetime:
    """The start of the first business day (Monday to Friday) after the day ``start``
    falls on, in the business time zone; UTC."""
    zone = ZoneInfo(settings.business_timezone)
    hour, minute = (int(part) for part in settings.business_day_start.split(":"))
    day = start.astimezone(zone).date()
    while True:
        day += dt.timedelta(days=1)
        if day.weekday() < 5:
            local = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
            return local.astimezone(dt.UTC)


def set_deadlines(
    settings: IncidentSettings, incident: Incident, last_entry_at: dt.datetime
) -> None:
    """Compute ``incident``'s deadlines from its severity: ack and resolve from its
    opening, the next update from ``last_entry_at``; none once it is closed."""
    opened = incident.created_at
    incident.ack_due_at = due(settings, "ack", incident.severity, opened)
    incident.resolve_target_at = due(settings, "resolve", incident.severity, opened)
    if incident.status in CLOSED_INCIDENT:
        incident.next_update_due_at = None
    else:
        incident.next_update_due_at = due(settings, "update", incident.severity, last_entry_at)


@dataclass(frozen=True)
class Running:
    """A clock that runs now: from ``started`` to ``due_at``."""

    clock: str
    started: dt.datetime
    due_at: dt.datetime


def running(incident: Incident, last_entry_at: dt.datetime) -> list[Running]:
    """The clocks of ``incident`` that still run."""
    if incident.status in CLOSED_INCIDENT:
        return []
    found = []
    if incident.acknowledged_at is None and incident.ack_due_at is not None:
        found.append(Running("ack", incident.created_at, incident.ack_due_at))
    if incident.next_update_due_at is not None:
        found.append(Running("update", last_entry_at, incident.next_update_due_at))
    if incident.resolve_target_at is not None:
        found.append(Running("resolve", incident.created_at, incident.resolve_target_at))
    return found


def level_at(clock: Running, now: dt.datetime, share: float) -> str | None:
    """``breached`` once the clock is due, ``warning`` once ``share`` of its time passed."""
    if now >= clock.due_at:
        return "breached"
    if now >= clock.started + (clock.due_at - clock.started) * share:
        return "warning"
    return None


async def last_entries(session: AsyncSession, incident_ids: list[str]) -> dict[str, dt.datetime]:
    """The time of each incident's latest public timeline entry (what the update clock
    counts from: an internal note tells readers nothing)."""
    if not incident_ids:
        return {}
    rows = await session.execute(
        select(IncidentUpdateRecord.incident_id, func.max(IncidentUpdateRecord.created_at))
        .where(
            IncidentUpdateRecord.incident_id.in_(incident_ids),
            IncidentUpdateRecord.visibility == "public",
        )
        .group_by(IncidentUpdateRecord.incident_id)
    )
    return {incident_id: at for incident_id, at in rows.all() if at is not None}


def clock_data(
    incident: Incident, clock: Running, level: str, now: dt.datetime
) -> dict[str, object]:
    return {
        "incident_id": incident.id,
        "name": incident.title,
        "severity": incident.severity,
        "status": incident.status,
        "clock": clock.clock,
        "level": level,
        "due_at": clock.due_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "detected_at": now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "commander": incident.commander,
        "links": {"self": f"{V1}/incidents/{incident.id}"},
    }


async def _record_once(
    session: AsyncSession, incident_id: str, clock: Running, level: str, now: dt.datetime
) -> bool:
    """Record the clock event; False when it was recorded before (by any worker)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(IncidentClockEvent)
        .values(
            incident_id=incident_id,
            clock=clock.clock,
            level=level,
            due_at=clock.due_at,
            emitted_at=now,
        )
        .on_conflict_do_nothing()
        .returning(IncidentClockEvent.incident_id)
    )
    return (await session.scalar(statement)) is not None


async def check(
    session: AsyncSession, settings: IncidentSettings, now: dt.datetime, *, limit: int = 500
) -> list[tuple[str, str, str]]:
    """Emit the warnings and breaches due at ``now`` in the caller's transaction; returns
    what was emitted as ``(incident id, clock, level)``. Only the highest level reached
    is emitted: a clock found already over emits its breach, not a late warning."""
    incidents = list(
        (
            await session.scalars(
                select(Incident)
                .where(Incident.status.not_in(tuple(CLOSED_INCIDENT)))
                .order_by(Incident.created_at, Incident.id)
                .limit(limit)
            )
        ).all()
    )
    latest = await last_entries(session, [i.id for i in incidents])
    emitted: list[tuple[str, str, str]] = []
    for incident in incidents:
        for clock in running(incident, latest.get(incident.id, incident.created_at)):
            level = level_at(clock, now, settings.warning_share)
            if level is None:
                continue
            if not await _record_once(session, incident.id, clock, level, now):
                continue
            data = clock_data(incident, clock, level, now)
            if level == "breached":
                await add_event(session, "incident.sla_breached", data)
            else:
                await add_event(session, "incident.sla_warning", data)
            emitted.append((incident.id, clock.clock, level))
    return emitted
