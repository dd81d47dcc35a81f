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

**The event contract.** The data of ``component.status_changed`` (``app.components.events``)
and of ``incident.created`` / ``incident.updated`` / ``incident.resolved``
(``app.incidents.events``) is defined and registered by those domains; this feed renders
exactly those types (``CONTRACT``).

**Public components only.** The feed feeds a public page, so it carries what the public
status (``/api/v2``) shows: a component with ``showcase: false`` is left out. Its
``component.status_changed`` gets no delivery (``shows``), and incident bodies list, and
derive their indicator from, the shown components only. Data written before events
carried ``showcase`` counts as hidden.

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
from typing import Any

from app.components.events import (
    COMPONENT_STATUS_CHANGED,
    STATUS_CHANGED,
    ComponentStatusChanged,
)
from app.components.vocabulary import (
    CLOSED_INCIDENT,
    COMPONENT_INDICATORS,
    STATUS_DESCRIPTIONS,
    StatusIndicator,
    worst,
)
from app.core.paths import V1
from app.incidents.events import CHANGE_TYPES, INCIDENT_EVENTS, IncidentChanged
from app.outbox.catalog import EventType
from app.outbox.models import OutboxEvent

# The event contract: the components and incidents domains define and register these
# types; the feed renders exactly those.
CONTRACT: tuple[EventType, ...] = (STATUS_CHANGED, *CHANGE_TYPES)
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


class Hidden(ValueError):
    """The event is about a component the public status does not show."""


def _shown(data: dict[str, Any]) -> bool:
    return data.get("showcase") is True


def shows(event_type: str, data: dict[str, Any]) -> bool:
    """Whether a ``statuspage`` endpoint receives this event: one of ``wants``' types,
    and not the status change of a component hidden from the public status."""
    if event_type == COMPONENT_STATUS_CHANGED:
        return _shown(data)
    return wants(event_type)


def _with_showcase(data: dict[str, Any]) -> dict[str, Any]:
    """Data written before events carried ``showcase``: hidden (``False``) where absent."""
    if "components" in data and isinstance(data["components"], list):
        return {
            **data,
            "components": [
                {"showcase": False, **c} if isinstance(c, dict) else c for c in data["components"]
            ],
        }
    return {"showcase": False, **data}


def iso(moment: dt.datetime) -> str:
    """``2026-01-01T12:00:00Z``: UTC, ``Z`` (a naive value is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _iso_or_none(moment: dt.datetime | None) -> str | None:
    return None if moment is None else iso(moment)


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
    if data.status in CLOSED_INCIDENT:
        return "none"
    return worst(
        data.impact, *(COMPONENT_INDICATORS[c.status] for c in data.components if c.showcase)
    )


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
            {"id": c.component_id, "name": c.name, "status": c.status}
            for c in data.components
            if c.showcase
        ],
    }


def render_statuspage(event: OutboxEvent, page: PageInfo) -> dict[str, Any]:
    """The Statuspage body of ``event`` (one of ``FEED_TYPES``), plus ``type`` and
    ``timestamp``. Raises ``Hidden`` for the status change of a component the public
    status does not show, ``ValueError`` for another type or data outside the contract
    (pydantic's ``ValidationError`` is one)."""
    head: dict[str, Any] = {
        "type": event.type,
        "timestamp": iso(event.created_at),
        "meta": {"unsubscribe": page.unsubscribe, "documentation": page.documentation},
    }
    if event.type == COMPONENT_STATUS_CHANGED:
        component = ComponentStatusChanged.model_validate(_with_showcase(event.data))
        if not component.showcase:
            raise Hidden(f"component {component.component_id} is not on the public status")
        indicator = COMPONENT_INDICATORS[component.new_status]
        return {**head, "page": _page(page, indicator), **_component(event, component)}
    if event.type in INCIDENT_EVENTS:
        incident = IncidentChanged.model_validate(_with_showcase(event.data))
        return {
            **head,
            "page": _page(page, incident_indicator(incident)),
            "incident": _incident(incident, page),
        }
    raise ValueError(f"{event.type!r} has no Statuspage shape")
