"""What clients send and see of environments, services and pins.

A service's request body depends on the registered drivers (one model per driver,
``<Name>Service``, with the driver's config model): :func:`service_schemas` derives it
from the ``DRIVERS`` catalog when the application is created.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    TypeAdapter,
    create_model,
    model_validator,
)

from app.core.registry import Catalog
from app.core.schemas import (
    CONTROL,
    CONTROL_BUT_TAB_NEWLINE,
    HTTP_URL,
    MULTILINE,
    MULTILINE_NOTE,
    PRINTABLE,
    RequestModel,
)
from app.drivers.base import DriverType
from app.drivers.docker_config import DockerHost
from app.drivers.process_config import Argument, EnvName, EnvValue
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
    metrics_url: str | None = Field(
        default=None,
        pattern=HTTP_URL,
        max_length=2000,
        description="The service's Prometheus metrics endpoint (`http_requests_total` by "
        "`status`): post-deployment verification scrapes it at the start and end of the "
        "settle window when the environment has no `prometheus_url`. Userinfo is shown "
        "to admins only.",
    )
    health_timeout_seconds: float = Field(default=30, gt=0, le=600)
    deploy_order: int = Field(default=0, ge=0, le=1000, description="Lower deploys first.")
    settle_seconds: float = Field(default=0, ge=0, le=3600, description="Wait after deploying.")
    smoke_tests: list[SmokeTest] = Field(default_factory=list, max_length=10)


class ServiceBody(_ServiceFields):
    """A service as a client writes it; each registered driver has its subclass, whose
    ``driver`` is the driver's name and ``config`` the driver's config model."""

    driver: str
    config: BaseModel


@dataclass(frozen=True)
class ServiceSchemas:
    """``body``: the request body type of a service (the union of one model per driver,
    discriminated by ``driver``); ``adapter`` validates it; ``models`` by driver name."""

    body: Any
    adapter: TypeAdapter[ServiceBody]
    models: dict[str, type[ServiceBody]]


def _model_name(driver: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", driver)) + "Service"


@functools.cache
def service_schemas(drivers: Catalog[DriverType]) -> ServiceSchemas:
    """The service body types of the registered drivers (``ProcessService``…)."""
    models: dict[str, type[ServiceBody]] = {
        name: create_model(
            _model_name(name),
            __base__=ServiceBody,
            __doc__=driver.description,
            __module__=__name__,
            driver=(Literal[name], ...),  # type: ignore[arg-type]
            config=(driver.config, ...),
        )
        for name, driver in drivers.items()
    }
    if not models:
        raise ValueError("no driver is registered")
    union: Any = Union[tuple(models.values())]  # noqa: UP007 - built from a tuple
    body: Any = Annotated[union, Field(discriminator="driver")] if len(models) > 1 else union
    adapter: TypeAdapter[ServiceBody] = TypeAdapter(body)
    return ServiceSchemas(body, adapter, models)


# Userinfo has its "/", "?", "#" and "@" percent-encoded (RFC 3986): written raw, the
# password would run past what redaction takes for the userinfo and be shown. "[" and "]"
# too, and in the host as well: URL parsers take them for an IPv6 literal's brackets and
# refuse the URL (the host is named, not written as an IPv6 address).
DATABASE_URL = (
    rf"^(postgresql(\+psycopg)?://([^{CONTROL} /?#@\[\]]*@)?[^{CONTROL} /?#@\[\]]*"
    rf"([/?][^{CONTROL} @]*)?|sqlite:////[^{CONTROL} ]+)$"
)


# The application's Redis: redis:// or rediss:// (TLS), userinfo percent-encoded as above.
REDIS_URL = (
    rf"^rediss?://([^{CONTROL} /?#@]*@)?[^{CONTROL} /?#@]+(/[0-9]{{1,5}})?([?][^{CONTROL} @#]*)?$"
)


def _ci(word: str) -> str:
    """``word`` in any case, as a pattern without flags (read alike by every dialect)."""
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


# A read-only statement: SELECT, WITH, VALUES or EXPLAIN first (it runs in a read-only
# transaction of a scratch database anyway).
SMOKE_QUERY = (
    rf"^[ \t\n]*({_ci('select')}|{_ci('with')}|{_ci('values')}|{_ci('explain')})"
    rf"([^A-Za-z0-9_{CONTROL_BUT_TAB_NEWLINE}][^{CONTROL_BUT_TAB_NEWLINE}]*)?$"
)
SmokeQuery = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=SMOKE_QUERY)]


def database_name(url: str) -> str:
    """The database a URL names: PostgreSQL's path, a SQLite file's name without its
    extension."""
    if url.startswith("sqlite:"):
        name = unquote(url.split(":///", 1)[-1]).rstrip("/").rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return unquote(urlsplit(url).path.lstrip("/")) or "postgres"


class EnvironmentIn(RequestModel):
    description: str = Field(
        default="", max_length=2000, pattern=MULTILINE, description=MULTILINE_NOTE
    )
    database: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="The database a deployment backs up first; none: no backup step. "
        "Default: the name in `database_url`.",
    )
    database_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=DATABASE_URL,
        description="The database backups dump and restores replace: "
        "`postgresql://user:password@host:5432/name` or `sqlite:////absolute/path.db`. "
        "Userinfo is shown to admins only.",
    )
    backup_retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="Backups of this environment are kept this long (default: the "
        "`FORMULA_OPS_BACKUPS__RETENTION_DAYS` setting); the newest verified one always.",
    )
    backup_smoke_queries: list[SmokeQuery] = Field(
        default_factory=list,
        max_length=20,
        description="Read-only queries (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`) a restore "
        f"drill runs in the restored database; each must succeed. {MULTILINE_NOTE}",
    )
    required_checklist: list[ChecklistItem] = Field(
        default_factory=list, description="Checklist items a deployment must confirm."
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=HTTP_URL,
        max_length=2000,
        description="Base URL of a Prometheus HTTP API: post-deployment verification "
        "queries `/api/v1/query` with the thresholds' queries. Userinfo is shown to "
        "admins only.",
    )

    docker_hosts: list[DockerHost] = Field(
        default_factory=list,
        max_length=20,
        description="The Docker engines the environment's services run on besides the "
        "control plane's own: a docker service's `config.docker_host` names one. TLS client "
        "keys and URL userinfo are shown to admins only.",
    )
    redis_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=REDIS_URL,
        description="The application's Redis (`redis://[user:password@]host:6379/0`, "
        "`rediss://` for TLS), read by runbooks. Userinfo is shown to admins only.",
    )

    @model_validator(mode="after")
    def _unique_docker_hosts(self) -> EnvironmentIn:
        names = [host.name for host in self.docker_hosts]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"docker_hosts: names must be unique ({', '.join(repeated)})")
        return self

    @model_validator(mode="after")
    def _database_from_url(self) -> EnvironmentIn:
        if self.database_url and not self.database:
            self.database = database_name(self.database_url)[:200] or None
        return self


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
    driver: str  # documented as one of the registered drivers (app.main)
    config: dict[str, Any]
    health_url: str | None
    metrics_url: str | None
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


class DockerTLSOut(BaseModel):
    ca_cert: str
    client_cert: str
    client_key: str = Field(description="Shown to admins only.")


class DockerHostOut(BaseModel):
    name: str
    url: str = Field(description="Userinfo shown to admins only.")
    tls: DockerTLSOut | None


class EnvironmentOut(BaseModel):
    name: str
    description: str
    database: str | None
    database_url: str | None = Field(description="Userinfo shown to admins only.")
    backup_retention_days: int | None
    backup_smoke_queries: list[str]
    required_checklist: list[str]
    prometheus_url: str | None
    docker_hosts: list[DockerHostOut]
    redis_url: str | None = Field(description="Userinfo shown to admins only.")
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
