"""What the incidents package contributes: its event types (the status page's
``incident.created|updated|resolved`` contract and the response clocks' warnings and
breaches) and the listener that opens an incident when a run ends badly."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from app.components.vocabulary import IncidentStatus, Severity
from app.core.paths import V1
from app.core.registry import Registry
from app.incidents import clocks
from app.incidents.events import CHANGE_TYPES
from app.outbox.catalog import EVENT_TYPES, EventData, EventLinks, EventType
from app.runs.kinds import RUN_ENDED


class IncidentClock(EventData):
    """``incident.sla_warning`` / ``incident.sla_breached``: one of an incident's response
    clocks neared or passed its deadline."""

    incident_id: str
    name: str = Field(description="The incident's title.")
    severity: Severity
    status: IncidentStatus
    clock: Literal["ack", "update", "resolve"] = Field(
        description="`ack`: not acknowledged; `update`: no public update; `resolve`: not resolved."
    )
    level: Literal["warning", "breached"]
    due_at: dt.datetime = Field(description="The deadline (UTC).")
    detected_at: dt.datetime = Field(description="When the scheduler noticed (UTC).")
    commander: str | None = Field(description="Who leads the response, when named.")
    links: EventLinks


CLOCK_EXAMPLE = {
    "incident_id": "inc_1",
    "name": "Elevated API errors",
    "severity": "P1",
    "status": "investigating",
    "clock": "ack",
    "level": "breached",
    "due_at": "2026-01-01T12:15:00Z",
    "detected_at": "2026-01-01T12:15:20Z",
    "commander": None,
    "links": {"self": f"{V1}/incidents/inc_1"},
}


def register(registry: Registry) -> None:
    from app.incidents import service

    events = registry[EVENT_TYPES]
    for event in CHANGE_TYPES:
        events.add(event.name, event)
    events.add(
        clocks.SLA_WARNING,
        EventType(
            clocks.SLA_WARNING,
            "An incident's response clock (acknowledge, next update, resolve) used its "
            "warning share (80 % by default) of the time; once per clock and deadline.",
            IncidentClock,
            {**CLOCK_EXAMPLE, "level": "warning", "detected_at": "2026-01-01T12:12:00Z"},
        ),
    )
    events.add(
        clocks.SLA_BREACHED,
        EventType(
            clocks.SLA_BREACHED,
            "An incident's response clock passed its deadline; once per clock and deadline.",
            IncidentClock,
            CLOCK_EXAMPLE,
        ),
    )
    registry[RUN_ENDED].add("incidents", service.on_run_ended)
