"""Prometheus Alertmanager's webhook notification, version 4, as Alertmanager sends it
(``notify/webhook``; documented under ``webhook_config``), and what the receiver answers.

Fields the receiver does not read are ignored, so other senders of the same shape
(Grafana's webhook contact point adds ``orgId``, ``values``, ``silenceURL``…) are taken
as they are. Every string is bounded; the whole body is at most
``FORMULA_OPS_ALERTS__MAX_BODY_BYTES``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
)

from app.core.schemas import IN_UTC_RANGE, MULTILINE, MULTILINE_NOTE, PRINTABLE

AlertStatus = Literal["firing", "resolved"]

LabelName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=PRINTABLE)]
LabelValue = Annotated[
    str, StringConstraints(max_length=8192, pattern=MULTILINE), Field(description=MULTILINE_NOTE)
]
AnnotationValue = Annotated[
    str, StringConstraints(max_length=65536, pattern=MULTILINE), Field(description=MULTILINE_NOTE)
]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=256)]
Annotations = Annotated[dict[LabelName, AnnotationValue], Field(max_length=256)]

# Go's RFC 3339 with up to nanoseconds ("2026-12-02T14:55:26.739266876Z"), always with a
# zone; within years 1-9999 in UTC (Go's zero time "0001-01-01T00:00:00Z" means none).
_GO_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_IN_UTC_RANGE = re.compile(IN_UTC_RANGE)


def _go_time(value: object) -> object:
    if not isinstance(value, str) or not _GO_TIME.match(value):
        raise ValueError("expected an RFC 3339 timestamp with a time zone")
    if not _IN_UTC_RANGE.match(value):
        raise ValueError("out of range: in UTC a timestamp must lie within years 1 to 9999")
    return value


def _as_utc(value: dt.datetime) -> dt.datetime:
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(
            "out of range: in UTC a timestamp must lie within years 1 to 9999"
        ) from None


AlertTime = Annotated[
    dt.datetime,
    BeforeValidator(_go_time),
    AfterValidator(_as_utc),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "allOf": [{"pattern": _GO_TIME.pattern}, {"pattern": IN_UTC_RANGE}],
        }
    ),
]


class _Lenient(BaseModel):
    """Unknown fields are ignored (never refused): the sender decides what it adds. A
    field is read by Alertmanager's name only (`generatorURL`): `generator_url` is an
    unknown key like any other, as the schema says."""

    model_config = ConfigDict(extra="ignore")


class AlertmanagerAlert(_Lenient):
    status: AlertStatus
    # Go encodes an empty map as null: null is taken as empty, here and below.
    labels: Labels | None = None
    annotations: Annotations | None = None
    starts_at: AlertTime | None = Field(default=None, alias="startsAt")
    ends_at: AlertTime | None = Field(
        default=None,
        alias="endsAt",
        description='RFC 3339; Alertmanager sends "0001-01-01T00:00:00Z" for "not ended".',
    )
    generator_url: str | None = Field(
        default=None, alias="generatorURL", max_length=8192, pattern=PRINTABLE
    )
    fingerprint: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Alertmanager's id of the alert; when absent, one is derived from the labels.",
    )


class AlertmanagerNotification(_Lenient):
    """One notification: the alerts of one group (``groupKey``) at one moment."""

    version: str = Field(
        max_length=16,
        pattern=PRINTABLE,
        description='"4" from Alertmanager (other senders of the same fields are accepted).',
    )
    group_key: str = Field(alias="groupKey", min_length=1, max_length=8192, pattern=PRINTABLE)
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    status: AlertStatus = Field(description="`resolved` once every alert of the group is.")
    receiver: str = Field(default="", max_length=200, pattern=PRINTABLE)
    group_labels: Labels | None = Field(default=None, alias="groupLabels")
    common_labels: Labels | None = Field(default=None, alias="commonLabels")
    common_annotations: Annotations | None = Field(default=None, alias="commonAnnotations")
    external_url: str | None = Field(
        default=None, alias="externalURL", max_length=2048, pattern=PRINTABLE
    )
    alerts: list[AlertmanagerAlert] = Field(
        description="The group's alerts (as many as the body limit holds)."
    )


class AlertReceipt(BaseModel):
    """What one notification did."""

    status: Literal["accepted"] = "accepted"
    group_key_hash: str = Field(description="SHA-256 of the groupKey: the group's id here.")
    alerts: int = Field(description="Alerts in the notification.")
    new_alerts: int = Field(description="Alerts seen for the first time (the others: re-sent).")
    firing: int
    resolved: int
    suppressed: int = Field(description="Firing alerts held back by a maintenance window.")
    suppressed_by: list[str] = Field(description="Ids of the maintenance windows that did.")
    incident_id: str | None = Field(description="The group's incident, when it has one.")
    incident_created: StrictBool
    incident_action: Literal["opened", "updated", "resolved", "none"]
