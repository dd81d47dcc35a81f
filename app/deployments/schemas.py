"""What clients send and see of deployments."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.environments.schemas import NAME, VERSION, ChecklistItem
from app.runs.models import RunStatus
from app.runs.schemas import PlannedStep, RunFailure, StepOut
from app.schemas import MULTILINE, MULTILINE_NOTE, PRINTABLE, RequestModel


class ServiceVersion(RequestModel):
    name: str = Field(pattern=NAME, max_length=63)
    version: str = Field(pattern=VERSION, max_length=128)


class DeploymentCreate(RequestModel):
    """`service` + `version` for one service, or `services` for several at once (each
    service once)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [{"required": ["service", "version"]}, {"required": ["services"]}]
        },
    )

    environment: str = Field(pattern=NAME, max_length=63)
    # Not nullable in the schema: which form a request uses is told by the keys present.
    service: Annotated[str, Field(pattern=NAME, max_length=63)] | SkipJsonSchema[None] = None
    version: Annotated[str, Field(pattern=VERSION, max_length=128)] | SkipJsonSchema[None] = None
    services: (
        Annotated[list[ServiceVersion], Field(min_length=1, max_length=20)] | SkipJsonSchema[None]
    ) = None
    ref: str | None = Field(
        default=None, max_length=200, pattern=PRINTABLE, description="Commit SHA, tag or branch."
    )
    description: str = Field(
        default="", max_length=2000, pattern=MULTILINE, description=MULTILINE_NOTE
    )
    checklist: list[ChecklistItem] = Field(
        default_factory=list, description="Pre-deployment checklist items confirmed."
    )
    backup: bool | None = Field(
        default=None, description="Back up the environment's database first (default: yes)."
    )
    auto_rollback: bool = Field(
        default=True, description="Roll back what changed when a step fails."
    )
    dry_run: bool = Field(default=False, description="Return the plan; execute nothing.")

    @model_validator(mode="after")
    def _one_form(self) -> DeploymentCreate:
        single = self.service is not None or self.version is not None
        if single and self.services is not None:
            raise ValueError("give either service + version or services, not both")
        if self.services is None and (self.service is None or self.version is None):
            raise ValueError("give service and version (or services)")
        if self.services is not None:
            names = [s.name for s in self.services]
            if len(set(names)) != len(names):
                raise ValueError("a service appears twice in services")
        return self

    def targets(self) -> list[tuple[str, str]]:
        if self.services is not None:
            return [(s.name, s.version) for s in self.services]
        assert self.service is not None
        assert self.version is not None
        return [(self.service, self.version)]


class DeployedService(BaseModel):
    name: str
    version: str
    previous_version: str | None = Field(description="What ran before this deployment.")
    changed: bool = Field(description="Whether this deployment changed the service.")


class DeploymentLinks(BaseModel):
    self: str
    run: str
    events: str
    evidence: str


class DeploymentOut(BaseModel):
    id: str
    kind: Literal["deployment", "rollback"]
    environment: str
    services: list[DeployedService]
    ref: str | None
    description: str
    checklist: list[str]
    required_checklist: list[str]
    backup: bool
    auto_rollback: bool
    rollback_of: str | None
    status: RunStatus
    queue_position: int | None = Field(
        description="Unfinished deployments of the same services ahead of this one while "
        "it is queued (0: it starts next); null once it started."
    )
    failure: RunFailure | None
    requested_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    cancel_requested: bool
    steps: list[StepOut]
    links: DeploymentLinks


class DeploymentList(BaseModel):
    items: list[DeploymentOut]
    next_cursor: str | None


class DeploymentDryRun(BaseModel):
    """What would run: nothing was written, queued or executed."""

    dry_run: Literal[True] = True
    environment: str
    services: list[ServiceVersion]
    checklist_missing: list[str] = Field(
        description="Required items not confirmed: the checklist step would fail."
    )
    queue_position: int = Field(description="Unfinished deployments of these services now.")
    steps: list[PlannedStep]


class Evidence(BaseModel):
    """The immutable record of a finished deployment; `sha256` covers the rest."""

    model_config = {"extra": "allow"}

    deployment_id: str
    status: RunStatus
    sha256: str
    steps: list[dict[str, Any]]
