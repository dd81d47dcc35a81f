"""Requests and responses of ``/v1/schedules``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    JsonValue,
    StrictBool,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from app.core.cron import InvalidCron, InvalidTimezone, expand, zone
from app.core.schemas import RequestModel

ID = r"^[0-9a-f-]{1,36}$"
# Default schedules are named after their runbook, so a runbook's name is a schedule's.
NAME = r"^[a-z0-9][a-z0-9-]{0,99}$"
RUNBOOK = r"^[a-z0-9][a-z0-9-]{0,62}$"
SlotStatusName = Literal["fired", "missed", "failed"]
Origin = Literal["default", "api"]


def _cron(value: str) -> str:
    try:
        expand(value)
    except InvalidCron as exc:
        raise ValueError(str(exc)) from None
    return value.strip()


def _timezone(value: str) -> str:
    try:
        zone(value)
    except InvalidTimezone as exc:
        raise ValueError(str(exc)) from None
    return value


Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NAME)]
RunbookName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=RUNBOOK)]
CronExpression = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[ *,/0-9A-Za-z?#@-]+$"),
    AfterValidator(_cron),
]
TimeZone = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$"),
    AfterValidator(_timezone),
]
Parameters = Annotated[dict[str, JsonValue], Field(max_length=50)]

_CRON = (
    "Five fields (minute hour day-of-month month day-of-week) or `@hourly`, `@daily`, "
    "`@weekly`, `@monthly`; read as wall-clock times in `timezone`. A time the clocks skip "
    "(spring forward) fires as much later as they jumped; a time they repeat fires once."
)
_TIMEZONE = "An IANA time zone name (`Europe/Berlin`); `UTC` by default."
_PARAMETERS = "The runbook's parameters, checked against it now and again when each run starts."
_ENABLED = "`false`: no slot fires (and none is reported missed) until it is enabled again."


class ScheduleCreate(RequestModel):
    name: Name = Field(description="Unique.")
    runbook: RunbookName = Field(description="A runbook of the catalog.")
    parameters: Parameters = Field(default_factory=dict, description=_PARAMETERS)
    cron: CronExpression = Field(description=_CRON)
    timezone: TimeZone = Field(default="UTC", description=_TIMEZONE)
    enabled: StrictBool = Field(default=True, description=_ENABLED)


class ScheduleChange(RequestModel):
    """Fields to change; absent fields keep their value. A new `cron`, `timezone` or
    `enabled` counts the next slot from now."""

    name: Name | SkipJsonSchema[None] = None
    runbook: RunbookName | SkipJsonSchema[None] = None
    parameters: Parameters | SkipJsonSchema[None] = Field(default=None, description=_PARAMETERS)
    cron: CronExpression | SkipJsonSchema[None] = Field(default=None, description=_CRON)
    timezone: TimeZone | SkipJsonSchema[None] = Field(default=None, description=_TIMEZONE)
    enabled: StrictBool | SkipJsonSchema[None] = Field(default=None, description=_ENABLED)

    @model_validator(mode="after")
    def _no_nulls(self) -> ScheduleChange:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"`{name}` cannot be null")
        return self


class SlotOut(BaseModel):
    id: str
    slot_at: dt.datetime = Field(description="The slot (UTC).")
    status: SlotStatusName = Field(
        description="`fired`: its run was created; `missed`: no worker fired it in time "
        "(not run late); `failed`: its run could not be created (`detail` says why)."
    )
    run_id: str | None
    detail: str | None
    created_at: dt.datetime


class ScheduleOut(BaseModel):
    id: str
    name: str
    runbook: str
    parameters: dict[str, JsonValue]
    cron: str
    timezone: str
    enabled: bool
    origin: Origin = Field(
        description="`default`: created from the runbook's default schedule; `api`: by a caller."
    )
    next_run_at: dt.datetime | None = Field(description="The next slot (UTC); null while disabled.")
    last_slot_at: dt.datetime | None = Field(description="The last slot fired or missed.")
    last_run_id: str | None = Field(description="The run of the last slot that fired.")
    created_by: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    recent_slots: list[SlotOut] = Field(description="The latest slots, newest first (at most 5).")


class ScheduleList(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None


class SlotList(BaseModel):
    items: list[SlotOut]
    next_cursor: str | None
