"""Request and response bodies of ``/v1/components``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from app.components.vocabulary import ComponentStatus
from app.core.schemas import MULTILINE, MULTILINE_NOTE, RequestModel

# Printable, no control character, and no space at either end (two names that differ by a
# trailing space would look alike on the status page).
LABEL = r"^[^\x00-\x20\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\x9f])?$"
_PART = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
SERVICE_REF = rf"^{_PART}/{_PART}$"
MAX_POSITION = 100_000

Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=LABEL)]
Group = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=LABEL)]
Description = Annotated[str, StringConstraints(max_length=2000, pattern=MULTILINE)]
ServiceRef = Annotated[str, StringConstraints(max_length=127, pattern=SERVICE_REF)]
# Constraints inside the types, so the schema of an optional field states them too.
Position = Annotated[int, Field(ge=0, le=MAX_POSITION)]
Services = Annotated[list[ServiceRef], Field(max_length=50)]

NAME_FIELD = "Unique (ignoring case); shown on the status page."
GROUP_FIELD = "The group it is shown in on the status page; null: ungrouped."
POSITION_FIELD = "Order within its group (lower first; then by name)."
STATUS_FIELD = (
    "The status an operator sets. What readers see (`status` in responses) is the worst of "
    "this and of what open incidents and in-progress maintenance windows claim."
)
SERVICES_FIELD = (
    "The services behind it, as `environment/service`; each must exist. An incident on "
    "the component lists their recent deployments; alerts naming them mark it."
)
SHOWCASE_FIELD = "Shown on the public status page."


def _distinct(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if len(set(value)) != len(value):
        raise ValueError("a service is listed twice")
    return value


class ComponentCreate(RequestModel):
    name: Name = Field(description=NAME_FIELD)
    description: Description = Field(default="", description=MULTILINE_NOTE)
    group: Group | None = Field(default=None, description=GROUP_FIELD)
    position: Position = Field(default=0, description=POSITION_FIELD)
    status: ComponentStatus = Field(default="operational", description=STATUS_FIELD)
    services: Services = Field(default_factory=list, description=SERVICES_FIELD)
    showcase: StrictBool = Field(default=True, description=SHOWCASE_FIELD)

    _check_services = field_validator("services")(_distinct)


# Fields of an update that may not be set to null (``group`` may: it ungroups).
_NOT_NULL = ("name", "description", "position", "status", "services", "showcase")


class ComponentUpdate(RequestModel):
    """Fields to change; absent fields keep their value."""

    name: Name | SkipJsonSchema[None] = Field(default=None, description=NAME_FIELD)
    description: Description | SkipJsonSchema[None] = Field(
        default=None, description=MULTILINE_NOTE
    )
    group: Group | None = Field(default=None, description=GROUP_FIELD + " `null` ungroups it.")
    position: Position | SkipJsonSchema[None] = Field(default=None, description=POSITION_FIELD)
    status: ComponentStatus | SkipJsonSchema[None] = Field(default=None, description=STATUS_FIELD)
    services: Services | SkipJsonSchema[None] = Field(
        default=None, description="Replaces the list. " + SERVICES_FIELD
    )
    showcase: StrictBool | SkipJsonSchema[None] = Field(default=None, description=SHOWCASE_FIELD)

    _check_services = field_validator("services")(_distinct)

    @model_validator(mode="after")
    def _no_null(self) -> ComponentUpdate:
        nulls = [n for n in _NOT_NULL if n in self.model_fields_set and getattr(self, n) is None]
        if nulls:
            raise ValueError(f"may not be null: {', '.join(nulls)} (omit a field to keep it)")
        return self


class ClaimOut(BaseModel):
    """What holds the component at a status besides the operator's own."""

    source_type: str = Field(description="`incident` or `maintenance`.")
    source_id: str
    status: ComponentStatus
    since: dt.datetime


class ComponentOut(BaseModel):
    id: str
    name: str
    description: str
    group: str | None
    position: int
    status: ComponentStatus = Field(
        description="What readers see: the worst of `manual_status` and of every claim."
    )
    manual_status: ComponentStatus = Field(description="The status an operator set.")
    claims: list[ClaimOut]
    services: list[str]
    showcase: StrictBool
    status_changed_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int
    links: dict[str, str]


class ComponentList(BaseModel):
    """Ordered by group (ungrouped first), position, name."""

    items: list[ComponentOut]
    next_cursor: str | None


def summary(body: BaseModel, *, only_set: StrictBool = False) -> dict[str, Any]:
    """What the audit trail records of a request body."""
    return body.model_dump(mode="json", exclude_unset=only_set)
