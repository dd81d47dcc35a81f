"""What clients send and see of deployments."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, StrictBool, Tag, model_validator

from app.core.schemas import MULTILINE, MULTILINE_NOTE, PRINTABLE, RequestModel
from app.environments.schemas import NAME, VERSION, ChecklistItem
from app.runs.models import RunStatus
from app.runs.schemas import PlannedStep, RunFailure, StepOut


class ServiceVersion(RequestModel):
    name: str = Field(pattern=NAME, max_length=63)
    version: str = Field(pattern=VERSION, max_length=128)


class _DeploymentOptions(RequestModel):
    """What both forms of a deployment request share."""

    environment: str = Field(pattern=NAME, max_length=63)
    ref: str | None = Field(
        default=None, max_length=200, pattern=PRINTABLE, description="Commit SHA, tag or branch."
    )
    description: str = Field(
        default="", max_length=2000, pattern=MULTILINE, description=MULTILINE_NOTE
    )
    checklist: list[ChecklistItem] = Field(
        default_factory=list, description="Pre-deployment checklist items confirmed."
    )
    backup: StrictBool | None = Field(
        default=None, description="Back up the environment's database first (default: yes)."
    )
    auto_rollback: StrictBool = Field(
        default=True, description="Roll back what changed when a step fails."
    )
    dry_run: StrictBool = Field(default=False, description="Return the plan; execute nothing.")


class DeploymentCreate(_DeploymentOptions):
    """One service: `service` + `version`."""

    service: str = Field(pattern=NAME, max_length=63)
    version: str = Field(pattern=VERSION, max_length=128)

    def targets(self) -> list[tuple[str, str]]:
        return [(self.service, self.version)]


class MultiServiceDeploymentCreate(_DeploymentOptions):
    """Several services at once: `services`, each service once."""

    services: list[ServiceVersion] = Field(
        min_length=1,
        max_length=20,
        json_schema_extra={"uniqueItems": True},
        description="Each service once (a name listed twice is refused).",
    )

    @model_validator(mode="after")
    def _each_service_once(self) -> MultiServiceDeploymentCreate:
        # `uniqueItems` says it for identical entries; one name with two versions is
        # the part a JSON schema cannot state.
        names = [s.name for s in self.services]
        if len(set(names)) != len(names):
            raise ValueError("a service appears twice in services")
        return self

    def targets(self) -> list[tuple[str, str]]:
        return [(s.name, s.version) for s in self.services]


def _form(value: Any) -> str:
    """Which form a request uses, told by the keys present: `services` or not."""
    if isinstance(value, dict):
        return "MultiServiceDeploymentCreate" if "services" in value else "DeploymentCreate"
    return type(value).__name__


DeploymentRequest = Annotated[
    Annotated[DeploymentCreate, Tag("DeploymentCreate")]
    | Annotated[MultiServiceDeploymentCreate, Tag("MultiServiceDeploymentCreate")],
    Discriminator(_form),
]
"""`service` + `version` for one service, or `services` for several at once (exactly one
of the two forms: `oneOf` in the schema)."""


class DeployedService(BaseModel):
    name: str
    version: str
    previous_version: str | None = Field(description="What ran before this deployment.")
    changed: StrictBool = Field(description="Whether this deployment changed the service.")


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
    backup: StrictBool
    auto_rollback: StrictBool
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
    cancel_requested: StrictBool
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
