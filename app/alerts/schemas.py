"""Prometheus Alertmanager's webhook notification, version 4, as Alertmanager sends it
(``notify/webhook``; documented under ``webhook_config``), and what the receiver answers.

Fields the receiver does not read are ignored, so other senders of the same shape
(Grafana's webhook contact point adds ``orgId``, ``values``, ``silenceURL``…) are taken
as they are. Every string is bounded; the whole body is at most
``FORMULA_OPS_ALERTS__MAX_BODY_BYTES``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.core.schemas import MULTILINE, PRINTABLE

AlertStatus = Literal["firing", "resolved"]

LabelName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=PRINTABLE)]
LabelValue = Annotated[str, StringConstraints(max_length=8192, pattern=MULTILINE)]
AnnotationValue = Annotated[str, StringConstraints(max_length=65536, pattern=MULTILINE)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=256)]
Annotations = Annotated[dict[LabelName, AnnotationValue], Field(max_length=256)]


class _Lenient(BaseModel):
    """Unknown fields are ignored (never refused): the sender decides what it adds."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _null_is_empty(value: object) -> object:
    """Go encodes an empty map as ``null`` (some senders' ``commonAnnotations``)."""
    return {} if value is None else value


class AlertmanagerAlert(_Lenient):
    status: AlertStatus
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)
    starts_at: dt.datetime | None = Field(default=None, alias="startsAt")
    ends_at: dt.datetime | None = Field(
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

    _maps = field_validator("labels", "annotations", mode="before")(_null_is_empty)


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
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Annotations = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str | None = Field(
        default=None, alias="externalURL", max_length=2048, pattern=PRINTABLE
    )
    alerts: list[AlertmanagerAlert] = Field(max_length=10000)

    _maps = field_validator("group_labels", "common_labels", "common_annotations", mode="before")(
        _null_is_empty
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
    incident_created: bool
    incident_action: Literal["opened", "updated", "resolved", "none"]
