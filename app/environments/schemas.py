"""What clients send and see of environments, services and pins."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, TypeAdapter

from app.core.schemas import HTTP_URL, MULTILINE, MULTILINE_NOTE, PRINTABLE, RequestModel
from app.drivers.docker import DockerConfig
from app.drivers.process import Argument, EnvName, EnvValue, ProcessConfig
from app.environments.checklist import CHECKLIST_ITEMS

NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")]
HeaderValue = Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]*$", max_length=4096)]
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
ChecklistItem = Literal[
    "code_review",
    "tests_passed",
    "security_scan",
    "performance_tests",
    "rollback_plan",
    "stakeholders_notified",
]
assert set(ChecklistItem.__args__) == set(CHECKLIST_ITEMS)  # type: ignore[attr-defined]


class HttpSmokeTest(RequestModel):
    """An HTTP request whose status must be one of `expect_status`."""

    name: str = Field(min_length=1, max_length=100, pattern=PRINTABLE)
    type: Literal["http"]
    url: str = Field(pattern=HTTP_URL, max_length=2000)
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=20,
        description="Sent with the request. Credential headers (`Authorization`, `Cookie`, "
        "`X-Api-Key`…) are shown to admins only.",
    )
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1, max_length=20)
    timeout_seconds: float = Field(default=30, gt=0, le=600)


class CommandSmokeTest(RequestModel):
    """A program (argv, no shell) that must exit 0."""

    name: str = Field(min_length=1, max_length=100, pattern=PRINTABLE)
    type: Literal["command"]
    argv: list[Argument] = Field(min_length=1, max_length=20, description=MULTILINE_NOTE)
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict, max_length=10, description=MULTILINE_NOTE
    )
    timeout_seconds: float = Field(default=30, gt=0, le=600)


SmokeTest = Annotated[HttpSmokeTest | CommandSmokeTest, Field(discriminator="type")]
SMOKE_TEST: TypeAdapter[HttpSmokeTest | CommandSmokeTest] = TypeAdapter(SmokeTest)


class _ServiceFields(RequestModel):
    health_url: str | None = Field(default=None, pattern=HTTP_URL, max_length=2000)
    health_timeout_seconds: float = Field(default=30, gt=0, le=600)
    deploy_order: int = Field(default=0, ge=0, le=1000, description="Lower deploys first.")
    settle_seconds: float = Field(default=0, ge=0, le=3600, description="Wait after deploying.")
    smoke_tests: list[SmokeTest] = Field(default_factory=list, max_length=10)


class ProcessService(_ServiceFields):
    """Runs as a local process of the control plane's host."""

    driver: Literal["process"]
    config: ProcessConfig


class DockerService(_ServiceFields):
    """Runs as a container of the Docker engine at `DOCKER_HOST` (or `config.docker_host`)."""

    driver: Literal["docker"]
    config: DockerConfig


ServiceIn = Annotated[ProcessService | DockerService, Field(discriminator="driver")]
SERVICE_IN: TypeAdapter[ProcessService | DockerService] = TypeAdapter(ServiceIn)


class EnvironmentIn(RequestModel):
    description: str = Field(
        default="", max_length=2000, pattern=MULTILINE, description=MULTILINE_NOTE
    )
    database: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="The database a deployment backs up first; none: no backup step.",
    )
    required_checklist: list[ChecklistItem] = Field(
        default_factory=list, description="Checklist items a deployment must confirm."
    )


class EnvironmentCreate(EnvironmentIn):
    name: str = Field(pattern=NAME, max_length=63)


class PinOut(BaseModel):
    version: str
    reason: str
    deployment_id: str | None
    created_by: str
    created_at: dt.datetime


class LastDeployment(BaseModel):
    id: str
    status: str
    finished_at: dt.datetime | None


class ServiceHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    detail: str | None
    checked_at: dt.datetime | None


class ServiceOut(BaseModel):
    environment: str
    name: str
    driver: Literal["process", "docker"]
    config: dict[str, Any]
    health_url: str | None
    health_timeout_seconds: float
    deploy_order: int
    settle_seconds: float
    smoke_tests: list[SmokeTest]
    current_version: str | None = Field(description="Left by the last successful deployment.")
    last_deployment: LastDeployment | None
    health: ServiceHealth | None = Field(description="As last observed by a deployment.")
    pins: list[PinOut]
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime


class EnvironmentOut(BaseModel):
    name: str
    description: str
    database: str | None
    required_checklist: list[str]
    services: list[ServiceOut]
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime


class EnvironmentList(BaseModel):
    items: list[EnvironmentOut]
    next_cursor: str | None


class ServiceList(BaseModel):
    items: list[ServiceOut]


class PinList(BaseModel):
    items: list[PinOut]
