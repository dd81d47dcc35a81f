"""Request and response bodies of ``/v1/webhooks`` and ``/v1/webhook-deliveries``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.core.schemas import MULTILINE, MULTILINE_NOTE, RequestModel
from app.webhooks.channels import template_errors
from app.webhooks.headers import is_reserved

EVENT_PATTERN = r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$"
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"
HEADER_VALUE = r"^[\x20-\x7e]*$"
HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME)]
HeaderValue = Annotated[str, StringConstraints(max_length=1024, pattern=HEADER_VALUE)]
# An event type, a `<family>.*` or `*` (filters and template keys).
TemplateKey = Annotated[str, StringConstraints(max_length=100, pattern=EVENT_PATTERN)]
# Tab and newline allowed: a message may have lines.
TemplateText = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=MULTILINE)]
Format = Literal["standard", "statuspage"]
DeliveryStatus = Literal["pending", "succeeded", "failed", "cancelled"]
DisabledReason = Literal["manual", "gone", "failing"]

URL_PATTERN = rf"^[A-Za-z][A-Za-z0-9+.-]*://[^{chr(0)}-{chr(0x20)}{chr(0x7F)}]+$"
URL_DESCRIPTION = (
    "Where events are POSTed: `https://` (or `http://` where the server allows it). Refused "
    "when it resolves to a loopback, private, link-local or otherwise reserved address, "
    "unless the server's allow-list covers it; checked again at every delivery."
)
URL_FIELD = Field(
    min_length=8,
    max_length=2048,
    pattern=URL_PATTERN,
    description=URL_DESCRIPTION,
)


def _headers(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return value
    seen: set[str] = set()
    for name, header_value in value.items():
        lower = name.lower()
        if not re.fullmatch(HEADER_NAME, name):
            raise ValueError(f"{name!r} is not a header name")
        if is_reserved(lower):
            raise ValueError(f"the header {name!r} is set by the server")
        if lower in seen:
            raise ValueError(f"the header {name!r} is given twice")
        seen.add(lower)
        if len(header_value) > 1024 or not re.fullmatch(HEADER_VALUE, header_value):
            raise ValueError(f"the value of {name!r} must be printable ASCII, at most 1024 long")
    return value


CHANNEL_FIELD = Field(
    default=None,
    min_length=8,
    max_length=2048,
    pattern=URL_PATTERN,
    description="Instead of `url`: a notification channel, as an apprise URL "
    "(`slack://…`, `mailto://…`, `mmost://…`, `workflows://…` for Microsoft Teams, "
    "`discord://…`, `json://…`, `form://…`, `ntfy://…`). A secret: kept sealed, never "
    "shown again (responses show the scheme and, where it is not a token, the host). Every "
    "host it contacts must be the service's own or listed in the server's channel hosts, "
    "and resolve to an allowed address; checked again at every delivery.",
)
TEMPLATES_FIELD = Field(
    default=None,
    max_length=50,
    description="Channels only: message text per event type or pattern (`deployment.failed`, "
    "`deployment.*`, `*`; the most specific applies), with placeholders `{type}`, "
    "`{timestamp}`, `{data.key.sub}` or `{key}` (a top-level key of `data`); `{{`/`}}` for "
    "braces. A key the event lacks stays as written. Without one: the type, time and "
    "top-level values of the event. " + MULTILINE_NOTE,
)


def _templates(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return value
    for pattern, text in value.items():
        if not re.fullmatch(EVENT_PATTERN, pattern):
            raise ValueError(f"{pattern!r} is not an event type, a `<family>.*` or `*`")
        if not 1 <= len(text) <= 4000:
            raise ValueError(f"the template of {pattern!r} must be 1 to 4000 characters long")
        if errors := template_errors(text):
            raise ValueError(f"the template of {pattern!r}: " + "; ".join(errors))
    return value


def _event_types(value: list[str] | None) -> list[str] | None:
    if value is None:
        return value
    for item in value:
        if not re.fullmatch(EVENT_PATTERN, item):
            raise ValueError(f"{item!r} is not an event type, a `<family>.*` or `*`")
    return list(dict.fromkeys(value))


class WebhookCreate(RequestModel):
    """A webhook (`url`) or a notification channel (`channel`): exactly one of them."""

    url: str | None = Field(
        default=None,
        min_length=8,
        max_length=2048,
        pattern=URL_PATTERN,
        description=URL_DESCRIPTION,
    )
    channel: str | None = CHANNEL_FIELD
    templates: dict[TemplateKey, TemplateText] | None = TEMPLATES_FIELD
    event_types: list[TemplateKey] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=50,
        description="Event types to receive: exact (`deployment.failed`), a family "
        "(`deployment.*`) or `*` for all. Each must name a registered event type.",
    )
    description: str = Field(
        default="", max_length=500, pattern=MULTILINE, description=MULTILINE_NOTE
    )
    enabled: StrictBool = True
    format: Format = Field(
        default="standard",
        description="`standard`: `{type, timestamp, data}`. `statuspage`: Atlassian "
        "Statuspage's subscriber webhook bodies (`meta`, `page` and `component_update` + "
        "`component`, or `incident`) with `type` and `timestamp` added, signed like every "
        "body; only `component.status_changed` and `incident.created`/`updated`/`resolved` "
        "are sent (the test event keeps the `standard` shape).",
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=20,
        description="Extra request headers (not `webhook-*` nor those HTTP owns). Values are "
        "kept sealed and never shown again; responses list the names.",
    )

    _check_event_types = field_validator("event_types")(_event_types)
    _check_headers = field_validator("headers")(_headers)
    _check_templates = field_validator("templates")(_templates)

    @model_validator(mode="after")
    def _one_destination(self) -> WebhookCreate:
        if (self.url is None) == (self.channel is None):
            raise ValueError("give exactly one of `url` (a webhook) and `channel`")
        if self.channel is not None:
            if self.headers:
                raise ValueError("`headers` apply to webhooks, not to channels")
            if self.format != "standard":
                raise ValueError("a channel sends messages: `format` must be `standard`")
        elif self.templates:
            raise ValueError("`templates` apply to channels, not to webhooks")
        return self


class WebhookUpdate(RequestModel):
    """Fields to change; absent fields keep their value."""

    url: str | None = Field(
        default=None,
        min_length=8,
        max_length=2048,
        pattern=URL_PATTERN,
        description=URL_DESCRIPTION,
    )
    event_types: list[TemplateKey] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(
        default=None, max_length=500, pattern=MULTILINE, description=MULTILINE_NOTE
    )
    enabled: StrictBool | None = Field(
        default=None, description="`true` re-enables a disabled endpoint and clears its streak."
    )
    channel: str | None = Field(
        default=None,
        min_length=8,
        max_length=2048,
        pattern=URL_PATTERN,
        description="A channel's new apprise URL (channels only).",
    )
    templates: dict[TemplateKey, TemplateText] | None = Field(
        default=None,
        max_length=50,
        description="Replaces every template (channels only). " + MULTILINE_NOTE,
    )
    format: Format | None = None
    headers: dict[HeaderName, HeaderValue] | None = Field(
        default=None, max_length=20, description="Replaces every custom header."
    )

    _check_event_types = field_validator("event_types")(_event_types)
    _check_headers = field_validator("headers")(_headers)
    _check_templates = field_validator("templates")(_templates)


class SecretRotation(BaseModel):
    previous_secret_expires_at: dt.datetime | None = Field(
        description="Until then the previous secret signs too (a second signature)."
    )


class WebhookOut(BaseModel):
    id: str
    kind: Literal["webhook", "channel"]
    url: str = Field(
        description="The destination, secrets in its query redacted; a channel's URL "
        "masked (`mailto://smtp.example.com/***`, `slack://***`)."
    )
    channel_service: str | None = Field(description="A channel's scheme (`slack`, `mailto`…).")
    templates: dict[str, str] = Field(description="A channel's message templates.")
    description: str = Field(description=MULTILINE_NOTE)
    event_types: list[str]
    format: Format
    enabled: StrictBool
    disabled_reason: DisabledReason | None
    disabled_at: dt.datetime | None
    header_names: list[str]
    rotation: SecretRotation
    failing_since: dt.datetime | None = Field(
        description="First failure since the last success (null: not failing)."
    )
    last_success_at: dt.datetime | None
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    links: dict[str, str]


class WebhookCreated(WebhookOut):
    secret: str | None = Field(
        description="The signing secret (`whsec_…`), shown this once; verify with any "
        "Standard Webhooks library. Null for a channel (messages are not signed)."
    )


class SecretRotated(BaseModel):
    secret: str = Field(description="The new signing secret, shown this once.")
    previous_secret_expires_at: dt.datetime


class WebhookList(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    number: int
    trigger: Literal["scheduled", "redelivery", "test"]
    started_at: dt.datetime
    duration_ms: int
    succeeded: StrictBool
    status_code: int | None
    response_excerpt: str | None = Field(description="The first KiB of the response body.")
    error: str | None


class DeliveryOut(BaseModel):
    id: str
    endpoint_id: str
    webhook_id: str = Field(description="The `webhook-id` header: the event's id.")
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: dt.datetime | None
    created_at: dt.datetime
    links: dict[str, str]


class DeliveryDetail(DeliveryOut):
    event: dict[str, Any] = Field(
        description="The body as this endpoint receives it (`{type, timestamp, data}`, or "
        "the `statuspage` shape); the signature headers differ per attempt."
    )
    attempt_log: list[AttemptOut]


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class TestResult(BaseModel):
    delivery: DeliveryOut
    attempt: AttemptOut


EVENT_TYPE = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"
