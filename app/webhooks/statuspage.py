"""The status-page feed: bodies in the shapes of Atlassian Statuspage's subscriber
webhooks, for endpoints with ``format: statuspage``.

Many receivers already understand Statuspage's two webhook bodies: chat integrations,
incident tools, "follow a vendor's status page" consumers. They key on the top-level
``component_update`` + ``component`` (a component changed status) or ``incident`` (an
incident was created or updated), next to ``meta`` and ``page``. This module renders
Formula Ops' component and incident events into exactly those shapes, with Statuspage's
field names and status vocabularies, so such a receiver needs no adapter. Two things
differ from Statuspage, both additions a Statuspage consumer ignores: the body keeps
``type`` and ``timestamp`` (which event, and when, as in the ``standard`` format), and it
is signed with the Standard Webhooks headers like every other body.

**The event contract.** Components and incidents do not exist yet. The models below are
the data of the events their domains will emit — ``component.status_changed`` and
``incident.created`` / ``incident.updated`` / ``incident.resolved`` — defined here first
so that the feed and the emitters agree on one contract. They are deliberately not
registered in the event catalog (``app.outbox.catalog.EVENT_TYPES``): the components and
incidents domains will register these types with these models (``CONTRACT``) when they
are built, and until then nothing emits them.

**The page block.** Statuspage's ``page`` describes a whole page: its id and its overall
status. This installation is one page, ``PAGE_ID``. Its overall status is not stored
anywhere yet (there is no component store), so ``status_indicator`` and
``status_description`` are derived from the event alone: the component's new status, or
the open incident's impact and affected components (``none`` once it is resolved). A
receiver therefore sees the status this event implies, not the worst status of every
component; that becomes exact when the components domain can answer it.

Other limits, all for want of records that do not exist yet: an incident body carries
only its latest update in ``incident_updates`` (Statuspage sends them all, newest first);
``shortlink``, ``meta.unsubscribe`` and ``meta.documentation`` are paths of this API (no
setting names the public base URL); the Twitter, scheduling and backfill fields are
present with their "unused" values (``false`` / ``null``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.paths import V1
from app.outbox.catalog import EventData, EventLinks, EventType
from app.outbox.models import OutboxEvent

# -- Statuspage's vocabularies ------------------------------------------------------------

ComponentStatus = Literal[
    "operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"
]
IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved", "postmortem"]
Impact = Literal["none", "minor", "major", "critical"]
Severity = Literal["P0", "P1", "P2", "P3"]
# Statuspage's page indicator: an impact, or `maintenance` while a component is under it.
StatusIndicator = Literal["none", "minor", "major", "critical", "maintenance"]

STATUS_DESCRIPTIONS: dict[str, str] = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
    "maintenance": "Service Under Maintenance",
}
# What one component's status says about the page.
COMPONENT_INDICATORS: dict[str, StatusIndicator] = {
    "operational": "none",
    "degraded_performance": "minor",
    "partial_outage": "major",
    "major_outage": "critical",
    "under_maintenance": "maintenance",
}
# Worst last: maintenance outranks nothing but "all operational".
_INDICATOR_ORDER: tuple[StatusIndicator, ...] = (
    "none",
    "maintenance",
    "minor",
    "major",
    "critical",
)
_CLOSED: frozenset[str] = frozenset({"resolved", "postmortem"})

# -- the event contract -------------------------------------------------------------------

COMPONENT_STATUS_CHANGED = "component.status_changed"
INCIDENT_CREATED = "incident.created"
INCIDENT_UPDATED = "incident.updated"
INCIDENT_RESOLVED = "incident.resolved"
INCIDENT_EVENTS = (INCIDENT_CREATED, INCIDENT_UPDATED, INCIDENT_RESOLVED)


class ComponentStatusChanged(EventData):
    """``component.status_changed``: a component's status changed (not its name or
    group). Emitted by the components domain, which registers the type."""

    component_id: str
    name: str
    group: str | None = Field(description="The component's group; null when ungrouped.")
    old_status: ComponentStatus
    new_status: ComponentStatus
    changed_at: dt.datetime = Field(description="When the status changed (UTC).")
    component_created_at: dt.datetime = Field(description="When the component was created.")
    links: EventLinks


class AffectedComponent(BaseModel):
    """A component an incident affects, with its status at the time of the event."""

    model_config = ConfigDict(extra="forbid")

    component_id: str
    name: str
    status: ComponentStatus


class IncidentUpdate(BaseModel):
    """The update (the message to readers) the event announces."""

    model_config = ConfigDict(extra="forbid")

    id: str
    body: str
    created_at: dt.datetime


class IncidentChanged(EventData):
    """``incident.created`` / ``incident.updated`` / ``incident.resolved``: the incident
    as it is after the change, with its latest update. Emitted by the incidents domain,
    which registers the types."""

    incident_id: str
    name: str = Field(description="The incident's title.")
    status: IncidentStatus
    severity: Severity = Field(description="Internal priority, P0 (highest) to P3.")
    impact: Impact = Field(description="The impact shown to readers of the status page.")
    components: list[AffectedComponent] = Field(description="The components it affects.")
    latest_update: IncidentUpdate
    created_at: dt.datetime
    updated_at: dt.datetime
    monitoring_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    links: EventLinks


_COMPONENT_EXAMPLE: dict[str, Any] = {
    "component_id": "cmp_api",
    "name": "API",
    "group": "Backend",
    "old_status": "operational",
    "new_status": "partial_outage",
    "changed_at": "2026-01-01T12:00:00Z",
    "component_created_at": "2025-06-01T08:00:00Z",
    "links": {"self": f"{V1}/components/cmp_api"},
}
_INCIDENT_EXAMPLE: dict[str, Any] = {
    "incident_id": "inc_1",
    "name": "Elevated API errors",
    "status": "identified",
    "severity": "P1",
    "impact": "major",
    "components": [{"component_id": "cmp_api", "name": "API", "status": "partial_outage"}],
    "latest_update": {
        "id": "upd_2",
        "body": "A bad deployment; rolling back.",
        "created_at": "2026-01-01T12:10:00Z",
    },
    "created_at": "2026-01-01T12:00:00Z",
    "updated_at": "2026-01-01T12:10:00Z",
    "monitoring_at": None,
    "resolved_at": None,
    "links": {"self": f"{V1}/incidents/inc_1"},
}

# The catalog entries the components and incidents domains register (not registered here).
CONTRACT: tuple[EventType, ...] = (
    EventType(
        COMPONENT_STATUS_CHANGED,
        "A component's status changed.",
        ComponentStatusChanged,
        _COMPONENT_EXAMPLE,
    ),
    EventType(INCIDENT_CREATED, "An incident was declared.", IncidentChanged, _INCIDENT_EXAMPLE),
    EventType(
        INCIDENT_UPDATED,
        "An incident changed status, impact or components, or got an update.",
        IncidentChanged,
        _INCIDENT_EXAMPLE,
    ),
    EventType(
        INCIDENT_RESOLVED,
        "An incident was resolved.",
        IncidentChanged,
        {
            **_INCIDENT_EXAMPLE,
            "status": "resolved",
            "resolved_at": "2026-01-01T12:40:00Z",
            "updated_at": "2026-01-01T12:40:00Z",
        },
    ),
)
FEED_TYPES: frozenset[str] = frozenset(event.name for event in CONTRACT)

# -- rendering ------------------------------------------------------------------------------

PAGE_ID = "formula-ops"
DOCUMENTATION = "/docs"


@dataclass(frozen=True)
class PageInfo:
    """What a body says about the page beyond the event: its id, and the ``meta`` links."""

    id: str
    unsubscribe: str
    documentation: str = DOCUMENTATION


def page_for(endpoint_id: str) -> PageInfo:
    """This installation's page as one endpoint sees it: unsubscribing is deleting (or
    disabling) that endpoint."""
    return PageInfo(id=PAGE_ID, unsubscribe=f"{V1}/webhooks/{endpoint_id}")


def wants(event_type: str) -> bool:
    """Whether a ``statuspage`` endpoint receives ``event_type``: the component and
    incident events of the contract, and nothing else (a Statuspage consumer would not
    understand any other body)."""
    return event_type in FEED_TYPES


def iso(moment: dt.datetime) -> str:
    """``2026-01-01T12:00:00Z``: UTC, ``Z`` (a naive value is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _iso_or_none(moment: dt.datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def worst(*indicators: StatusIndicator) -> StatusIndicator:
    return max(indicators, key=_INDICATOR_ORDER.index, default="none")


def _page(page: PageInfo, indicator: StatusIndicator) -> dict[str, Any]:
    return {
        "id": page.id,
        "status_indicator": indicator,
        "status_description": STATUS_DESCRIPTIONS[indicator],
    }


def _component(event: OutboxEvent, data: ComponentStatusChanged) -> dict[str, Any]:
    return {
        "component_update": {
            "created_at": iso(data.changed_at),
            "new_status": data.new_status,
            "old_status": data.old_status,
            "id": event.id,  # one update, one event: its id is the `webhook-id` too
            "component_id": data.component_id,
        },
        "component": {
            "created_at": iso(data.component_created_at),
            "id": data.component_id,
            "name": data.name,
            "status": data.new_status,
        },
    }


def incident_indicator(data: IncidentChanged) -> StatusIndicator:
    """An open incident: the worse of its impact and its components' statuses; a closed
    one: ``none``."""
    if data.status in _CLOSED:
        return "none"
    return worst(data.impact, *(COMPONENT_INDICATORS[c.status] for c in data.components))


def _incident(data: IncidentChanged, page: PageInfo) -> dict[str, Any]:
    update = data.latest_update
    postmortem = data.status == "postmortem"
    return {
        "backfilled": False,
        "created_at": iso(data.created_at),
        "impact": data.impact,
        "impact_override": None,
        "monitoring_at": _iso_or_none(data.monitoring_at),
        "postmortem_body": update.body if postmortem else None,
        "postmortem_body_last_updated_at": iso(update.created_at) if postmortem else None,
        "postmortem_ignored": False,
        "postmortem_notified_subscribers": postmortem,
        "postmortem_notified_twitter": False,
        "postmortem_published_at": iso(update.created_at) if postmortem else None,
        "resolved_at": _iso_or_none(data.resolved_at),
        "scheduled_auto_transition": False,
        "scheduled_for": None,
        "scheduled_remind_prior": False,
        "scheduled_reminded_at": None,
        "scheduled_until": None,
        "shortlink": data.links.self,
        "status": data.status,
        "updated_at": iso(data.updated_at),
        "id": data.incident_id,
        "organization_id": page.id,
        "incident_updates": [
            {
                "body": update.body,
                "created_at": iso(update.created_at),
                "display_at": iso(update.created_at),
                "status": data.status,
                "twitter_updated_at": None,
                "updated_at": iso(update.created_at),
                "wants_twitter_update": False,
                "id": update.id,
                "incident_id": data.incident_id,
            }
        ],
        "name": data.name,
        # Not in Statuspage's documented example, but in its real incident bodies.
        "components": [
            {"id": c.component_id, "name": c.name, "status": c.status} for c in data.components
        ],
    }


def render_statuspage(event: OutboxEvent, page: PageInfo) -> dict[str, Any]:
    """The Statuspage body of ``event`` (one of ``FEED_TYPES``), plus ``type`` and
    ``timestamp``. Raises ``ValueError`` for another type or data outside the contract
    (pydantic's ``ValidationError`` is one)."""
    head: dict[str, Any] = {
        "type": event.type,
        "timestamp": iso(event.created_at),
        "meta": {"unsubscribe": page.unsubscribe, "documentation": page.documentation},
    }
    if event.type == COMPONENT_STATUS_CHANGED:
        component = ComponentStatusChanged.model_validate(event.data)
        indicator = COMPONENT_INDICATORS[component.new_status]
        return {**head, "page": _page(page, indicator), **_component(event, component)}
    if event.type in INCIDENT_EVENTS:
        incident = IncidentChanged.model_validate(event.data)
        return {
            **head,
            "page": _page(page, incident_indicator(incident)),
            "incident": _incident(incident, page),
        }
    raise ValueError(f"{event.type!r} has no Statuspage shape")
