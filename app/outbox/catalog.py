"""The event catalog: every domain event type, documented once, with a model of its data.

Subscribers of webhooks receive ``{"type", "timestamp", "data"}`` bodies; the catalog
tells them every ``type`` there is and the shape of its ``data``. Each domain registers
the types it emits in its ``register(registry)`` (like run kinds and drivers), with the
pydantic model that documents and validates its data; the OpenAPI document's
``webhooks`` and the README's event table are derived from it, and the tests check that
every event written is registered and valid::

    registry[EVENT_TYPES].add("deployment.succeeded", EventType(...))

Event data is small: ids, status, a summary and links to the full records. Patterns
(webhook endpoint filters) name an exact type, a ``<prefix>.*`` family or ``*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.registry import Catalog, CatalogKey


class EventData(BaseModel):
    """Base of the models of event data: what is written is exactly what is documented
    (an undocumented field fails validation). Each one's validator is built when an
    event of its type is first written or documented (``defer_build``), not when the
    process starts."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class EventLinks(BaseModel):
    """Where the full records are (paths of this API)."""

    model_config = ConfigDict(extra="forbid")

    self: str = Field(description="The resource the event is about.")


@dataclass(frozen=True)
class EventType:
    """One type of domain event: its name (``<domain>.<past-tense verb>``), a one-line
    summary, the model of its ``data`` and an example of it."""

    name: str
    summary: str
    data: type[BaseModel]
    example: dict[str, Any] | None = None


EVENT_TYPES: CatalogKey[EventType] = CatalogKey("event type")

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_PREFIX = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


def is_valid_name(name: str) -> bool:
    """``<domain>.<verb>``: lower-case words joined by dots."""
    return bool(_NAME.match(name))


def matches(pattern: str, type: str) -> bool:
    """Whether event ``type`` is selected by ``pattern``: the exact type, ``<prefix>.*``
    (every type under the prefix) or ``*`` (every type)."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return type.startswith(pattern[:-1])
    return pattern == type


def validate_pattern(pattern: str, catalog: Catalog[EventType]) -> None:
    """Refuse a pattern that selects nothing: an exact type nothing registered, or a
    wildcard under which no registered type falls (``ValueError`` says which)."""
    if pattern == "*":
        return
    if pattern.endswith(".*"):
        if not _PREFIX.match(pattern[:-2]):
            raise ValueError(f"{pattern!r} is not an event type pattern (`a.b`, `a.*` or `*`)")
        if not any(matches(pattern, name) for name in catalog):
            raise ValueError(f"no registered event type matches {pattern!r}")
        return
    if not is_valid_name(pattern):
        raise ValueError(f"{pattern!r} is not an event type pattern (`a.b`, `a.*` or `*`)")
    if pattern not in catalog:
        raise ValueError(f"{pattern!r} is not a registered event type")


# -- documentation ---------------------------------------------------------------------

SIGNATURE = (
    "Signed with the Standard Webhooks headers `webhook-id` (the message's id, the same "
    "on every retry of it: dedupe by it), `webhook-timestamp` (seconds since the epoch) and "
    '`webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` with the '
    "endpoint's secret; several space-separated during a rotation). Delivered at least "
    "once; any answer but 2xx is retried with backoff."
)
_HEADERS = (
    ("webhook-id", "The message's id, the same on every retry of it."),
    ("webhook-timestamp", "When this attempt was signed (seconds since the epoch)."),
    ("webhook-signature", "`v1,<base64 signature>`, space-separated during a rotation."),
)


def openapi_webhooks(
    catalog: Catalog[EventType], components: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The OpenAPI 3.1 ``webhooks`` object of ``catalog``: one POST per event type whose
    body is ``{type, timestamp, data}``. The data models' schemas are added to
    ``components`` (a name already there must be the same schema but for its
    description, or it is a programming error)."""
    webhooks: dict[str, dict[str, Any]] = {}
    for name, event in catalog.items():
        schema = event.data.model_json_schema(ref_template="#/components/schemas/{model}")
        for key, definition in {**schema.pop("$defs", {}), event.data.__name__: schema}.items():
            _add_component(components, key, definition)
        body: dict[str, Any] = {
            "type": "object",
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": {"type": "string", "const": name},
                "timestamp": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the event happened (UTC).",
                },
                "data": {"$ref": f"#/components/schemas/{event.data.__name__}"},
            },
        }
        media: dict[str, Any] = {"schema": body}
        if event.example is not None:
            media["example"] = {
                "type": name,
                "timestamp": "2026-01-01T12:00:00Z",
                "data": event.example,
            }
        webhooks[name] = {
            "post": {
                "summary": event.summary,
                "description": f"`{name}`: {event.summary}\n\n{SIGNATURE}",
                "operationId": "event_" + re.sub(r"\W", "_", name),
                "tags": ["events"],
                "parameters": [
                    {
                        "name": header,
                        "in": "header",
                        "required": True,
                        "description": description,
                        "schema": {"type": "string"},
                    }
                    for header, description in _HEADERS
                ],
                "requestBody": {"required": True, "content": {"application/json": media}},
                "responses": {
                    "2XX": {"description": "Received (any other answer is retried)."},
                },
            }
        }
    return webhooks


def _add_component(components: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    existing = components.get(name)
    if existing is None:
        components[name] = schema
        return

    def bare(node: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in node.items() if k != "description"}

    if bare(existing) != bare(schema):
        raise ValueError(f"two different schemas are named {name!r} in the OpenAPI document")
