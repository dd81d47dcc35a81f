"""What an endpoint receives for an event: the body bytes (signed as they are sent).

``standard``: ``{"type", "timestamp", "data"}``, the event as the outbox holds it.

``statuspage``: Atlassian Statuspage's subscriber shapes with ``type`` and ``timestamp``
(``app.webhooks.statuspage``), for the component and incident events only: the
dispatcher creates no delivery of any other event for such an endpoint, nor of the status
change of a component hidden from the public status (``showcase: false``). Two bodies still
fall back to ``standard``, so that an attempt always has a body to sign: the
``webhook.test`` event of ``POST /v1/webhooks/{id}/test`` (Statuspage has no test shape),
and an event whose data breaks the contract (logged; failing the attempt instead would
only retry the same data until the endpoint is disabled).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from app.outbox.models import OutboxEvent
from app.webhooks import statuspage
from app.webhooks.models import WebhookEndpoint

logger = logging.getLogger(__name__)


def event_body(event: OutboxEvent) -> dict[str, Any]:
    return {
        "type": event.type,
        "timestamp": statuspage.iso(event.created_at),
        "data": event.data,
    }


def wants(endpoint: WebhookEndpoint, event_type: str, data: dict[str, Any] | None = None) -> bool:
    """Whether ``endpoint`` receives events of ``event_type`` in its format (a format may
    carry only some families), and, given the event's ``data``, this event (the
    ``statuspage`` format leaves out components hidden from the public status)."""
    if endpoint.format == "statuspage":
        if data is not None:
            return statuspage.shows(event_type, data)
        return statuspage.wants(event_type)
    return True


def body(endpoint: WebhookEndpoint, event: OutboxEvent) -> dict[str, Any]:
    """The body of ``event`` for ``endpoint``, before encoding."""
    if endpoint.format == "statuspage" and statuspage.wants(event.type):
        try:
            return statuspage.render_statuspage(event, statuspage.page_for(endpoint.id))
        except statuspage.Hidden:
            # The dispatcher makes no delivery of such an event (``wants`` with its data);
            # one made before events carried ``showcase`` names the event, nothing more.
            return {**event_body(event), "data": {}}
        except ValueError as exc:
            logger.warning(
                "event %s (%s) does not fit the statuspage format, sent as standard: %s",
                event.id,
                event.type,
                exc,
            )
    return event_body(event)


def render(endpoint: WebhookEndpoint, event: OutboxEvent) -> bytes:
    return json.dumps(body(endpoint, event), separators=(",", ":"), default=str).encode()
