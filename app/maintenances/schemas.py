"""Requests and responses of ``/v1/maintenances``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, JsonValue, StrictBool, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.components.vocabulary import ComponentStatus
from app.core.schemas import MULTILINE, MULTILINE_NOTE, PRINTABLE, RequestModel, Timestamp
from app.environments.schemas import NAME

WindowStatus = Literal["scheduled", "in_progress", "verifying", "completed", "cancelled"]

ID = r"^[0-9a-f-]{1,36}$"
ComponentId = Annotated[str, StringConstraints(min_length=1, max_length=36, pattern=ID)]
EnvironmentName = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=NAME)]
Title = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=PRINTABLE)]
Description = Annotated[str, StringConstraints(max_length=10_000, pattern=MULTILINE)]
Message = Annotated[str, StringConstraints(min_length=1, max_length=5_000, pattern=MULTILINE)]

UNIQUE: dict[str, JsonValue] = {"uniqueItems": True}
MAX_COMPONENTS = 100
MAX_ENVIRONMENTS = 50
# Each item once: stated in the schema, checked by the models' validators.
ComponentIds = Annotated[
    list[ComponentId], Field(max_length=MAX_COMPONENTS, json_schema_extra=UNIQUE)
]
EnvironmentNames = Annotated[
    list[EnvironmentName], Field(max_length=MAX_ENVIRONMENTS, json_schema_extra=UNIQUE)
]

_COMPONENTS = "Ids of the components under maintenance while the window is in progress."
_ENVIRONMENTS = (
    "Names of the environments it concerns: frozen for deployments while it is in progress "
    "(opened instead, for a deploy window)."
)
_DEPLOY_WINDOW = (
    "A window for deploying: its environments are not frozen (its components are still "
    "under maintenance and alerts for them still suppressed)."
)
_AUTO = (
    "Started and ended by the scheduler at `scheduled_for` / `scheduled_until`; `false`: "
    "an operator starts and completes it."
)


def _unique(values: list[str] | None, field: str) -> None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"`{field}` names an item twice")


class MaintenanceCreate(RequestModel):
    title: Title
    description: Description = Field(default="", description=MULTILINE_NOTE)
    scheduled_for: Timestamp = Field(description="When it starts (RFC 3339 with a time zone).")
    scheduled_until: Timestamp = Field(description="When it ends; after `scheduled_for`.")
    components: ComponentIds = Field(default_factory=list, description=_COMPONENTS)
    environments: EnvironmentNames = Field(default_factory=list, description=_ENVIRONMENTS)
    deploy_window: StrictBool = Field(default=False, description=_DEPLOY_WINDOW)
    auto_transition: StrictBool = Field(default=True, description=_AUTO)

    @model_validator(mode="after")
    def _check(self) -> MaintenanceCreate:
        if self.scheduled_until <= self.scheduled_for:
            raise ValueError("`scheduled_until` must be after `scheduled_for`")
        _unique(self.components, "components")
        _unique(self.environments, "environments")
        return self


class MaintenanceChange(RequestModel):
    """Fields to change; absent fields keep their value. Once a window has started its
    start is history (`scheduled_for` is refused); once it has ended, only `title` and
    `description` change."""

    title: Title | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = Field(
        default=None, description=MULTILINE_NOTE
    )
    scheduled_for: Timestamp | SkipJsonSchema[None] = None
    scheduled_until: Timestamp | SkipJsonSchema[None] = Field(
        default=None, description="After `scheduled_for` (the new one or the current one)."
    )
    components: ComponentIds | SkipJsonSchema[None] = Field(default=None, description=_COMPONENTS)
    environments: EnvironmentNames | SkipJsonSchema[None] = Field(
        default=None, description=_ENVIRONMENTS
    )
    deploy_window: StrictBool | SkipJsonSchema[None] = Field(
        default=None, description=_DEPLOY_WINDOW
    )
    auto_transition: StrictBool | SkipJsonSchema[None] = Field(default=None, description=_AUTO)

    @model_validator(mode="after")
    def _check(self) -> MaintenanceChange:
        # The window's span is checked with its current times, once it is found.
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"`{name}` cannot be null")
        _unique(self.components, "components")
        _unique(self.environments, "environments")
        return self


class MaintenanceUpdateCreate(RequestModel):
    """A message to readers of the status page about the window."""

    body: Message = Field(description=MULTILINE_NOTE)


class Transition(RequestModel):
    """An optional message recorded with the change (a default one otherwise)."""

    message: Message | None = Field(default=None, description=MULTILINE_NOTE)


class MaintenanceComponentOut(BaseModel):
    id: str
    name: str
    status: ComponentStatus = Field(description="The component's status now.")


class UpdateOut(BaseModel):
    id: str
    status: WindowStatus = Field(description="The window's status when it was written.")
    body: str
    created_by: str
    created_at: dt.datetime


class MaintenanceOut(BaseModel):
    id: str
    title: str
    description: str
    status: WindowStatus
    scheduled_for: dt.datetime
    scheduled_until: dt.datetime
    deploy_window: StrictBool
    auto_transition: StrictBool
    components: list[MaintenanceComponentOut]
    environments: list[str]
    started_at: dt.datetime | None
    verifying_at: dt.datetime | None
    completed_at: dt.datetime | None = Field(description="When it completed or was cancelled.")
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    updates: list[UpdateOut] = Field(description="Its updates, oldest first.")


class MaintenanceList(BaseModel):
    items: list[MaintenanceOut]
    next_cursor: str | None
