"""Request and response bodies of ``/v1/thresholds``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from app.core.schemas import MULTILINE, MULTILINE_NOTE, PRINTABLE, RequestModel

# The runbook's incident severities, P0 the most severe (the same words as
# app.components.vocabulary, a sibling this package does not import).
Severity = Literal["P0", "P1", "P2", "P3"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
NAME = r"^[a-z][a-z0-9_]{0,63}$"
# An Alertmanager `alertname` (a label value): printable, no space at either end.
ALERT_NAME = r"^[^\x00-\x20\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]{0,198}[^\x00-\x20\x7f-\x9f])?$"
AlertName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=ALERT_NAME)]
# Constraints inside the types, so the schema of an optional field states them too.
Title = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=PRINTABLE)]
Description = Annotated[str, StringConstraints(max_length=2000, pattern=MULTILINE)]
AlertNames = Annotated[list[AlertName], Field(max_length=50)]
PromQL = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=MULTILINE)]


def _number(value: object) -> object:
    """A level is a number: ``true`` is not 1."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


Level = Annotated[float, BeforeValidator(_number), Field(ge=0, le=1e9, allow_inf_nan=False)]

LEVELS_NOTE = (
    "A measured value above `warning` is a warning, above `critical` critical; null: the "
    "threshold has no such level. `warning` must be below `critical`; percentages are at "
    "most 100."
)
QUERY_NOTE = (
    "PromQL instant query measuring the quantity in the threshold's unit, for post-deploy "
    "verification; `$service`, `$environment` and `$window` are replaced by validated "
    "values (no other `$` placeholder). Null: not queried from Prometheus. " + MULTILINE_NOTE
)
_NOT_NULL = ("title", "description", "warning_severity", "critical_severity", "alert_names")


class ThresholdUpdate(RequestModel):
    """Fields to change; absent fields keep their value. `warning`, `critical` and
    `prometheus_query` may be set to null."""

    title: Title | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = Field(
        default=None, description=MULTILINE_NOTE
    )
    warning: Level | None = Field(default=None, description=LEVELS_NOTE)
    critical: Level | None = Field(default=None, description=LEVELS_NOTE)
    warning_severity: Severity | SkipJsonSchema[None] = Field(
        default=None, description="The incident severity an alert at the warning level opens."
    )
    critical_severity: Severity | SkipJsonSchema[None] = Field(
        default=None,
        description="The incident severity an alert at the critical level opens; at least as "
        "severe as `warning_severity` (P0 is the most severe).",
    )
    alert_names: AlertNames | SkipJsonSchema[None] = Field(
        default=None,
        description="Alertmanager `alertname`s measuring this quantity (unique ignoring case, "
        "and not listed by another threshold).",
    )
    prometheus_query: PromQL | None = Field(default=None, description=QUERY_NOTE)

    @field_validator("alert_names")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len({v.casefold() for v in value}) != len(value):
            raise ValueError("an alert name is listed twice (ignoring case)")
        return value

    @model_validator(mode="after")
    def _no_null(self) -> ThresholdUpdate:
        nulls = [n for n in _NOT_NULL if n in self.model_fields_set and getattr(self, n) is None]
        if nulls:
            raise ValueError(f"may not be null: {', '.join(nulls)} (omit a field to keep it)")
        return self


class ThresholdOut(BaseModel):
    name: str = Field(
        description="`error_rate`, `latency_p95`, `cpu`, `memory`, `disk`, `backup_age` or "
        "`backup_verified_age`."
    )
    title: str
    description: str
    unit: str = Field(description="`percent`, `milliseconds` or `hours`: the unit of the levels.")
    warning: float | None
    critical: float | None
    warning_severity: Severity
    critical_severity: Severity
    alert_names: list[str]
    prometheus_query: str | None
    updated_by: str
    updated_at: dt.datetime
    version: int
    links: dict[str, str]


class ThresholdList(BaseModel):
    """Ordered by name."""

    items: list[ThresholdOut]
    next_cursor: str | None
