"""The driver interface: how a service of an environment is pulled, replaced, checked
and stopped. One implementation per way of running things (``process``, ``docker``),
registered as a :class:`DriverType` in the :data:`DRIVERS` catalog by
:mod:`app.drivers.registration`.

Drivers are called by step actions in a worker, never by the API (which only validates
configs with a driver type's ``config`` model: a module without the driver's SDK).
Every operation is *idempotent* (ensure-state): deploying the version that already runs healthy does
nothing, so a step interrupted by a dead worker can safely run again.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from app.core.registry import CatalogKey
from app.core.settings import DockerSettings, Settings

LogLine = Callable[[str], Awaitable[None]]


class DriverError(Exception):
    """The operation failed; the message is safe to show (no secrets)."""


class UnhealthyError(DriverError):
    """The new version started but did not become healthy in time."""


@dataclass(frozen=True)
class ServiceSpec:
    """What a driver needs to know about one service (from the environment's config)."""

    environment: str
    name: str
    driver: str
    config: dict[str, Any]  # driver-specific, validated by the driver's own model
    health_url: str | None = None
    health_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Deployed:
    """What runs now."""

    version: str
    ident: str  # pid, container id…
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeployResult:
    version: str
    previous_version: str | None
    changed: bool  # False when the version already ran healthy (nothing done)
    output: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    version: str | None = None  # as reported by the service, when it says
    status_code: int | None = None
    latency_ms: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class DriverSettings:
    """The server's settings and host facts a driver uses (the same for every driver
    instance of a process)."""

    state_dir: Path
    docker: DockerSettings = field(default_factory=DockerSettings)

    @classmethod
    def from_settings(cls, settings: Settings) -> DriverSettings:
        return cls(state_dir=settings.state_dir, docker=settings.docker)


class Driver(Protocol):
    name: str

    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The config normalised (raise ``ValueError`` with a clear message if invalid)."""
        ...

    async def pull(self, spec: ServiceSpec, version: str, log: LogLine) -> str:
        """Make ``version`` available locally (image pull; for processes, a check that
        the command exists). Returns a short output text."""
        ...

    async def current(self, spec: ServiceSpec) -> Deployed | None:
        """What runs now, or None."""
        ...

    async def deploy(self, spec: ServiceSpec, version: str, log: LogLine) -> DeployResult:
        """Replace what runs by ``version`` and wait until it is healthy; raise
        :class:`UnhealthyError` when it does not become healthy (what runs afterwards
        is driver-specific and reported by :meth:`current`)."""
        ...

    async def health(self, spec: ServiceSpec) -> HealthResult:
        """One health probe of what runs now."""
        ...

    async def stop(self, spec: ServiceSpec, log: LogLine) -> None:
        """Stop and remove what runs (no error when nothing runs)."""
        ...

    async def aclose(self) -> None:
        """Release what the instance keeps (clients, credentials); it is not used again."""
        ...


# (location in the config, message) of what the server's settings do not allow.
Problem = tuple[tuple[str | int, ...], str]


def _one_connection(config: Mapping[str, Any]) -> str | None:
    return None


def _no_problems(config: Any, settings: DriverSettings) -> list[Problem]:
    return []


@dataclass(frozen=True)
class DriverType:
    """A way of running services, as registered in :data:`DRIVERS` under its name.

    ``config`` is the model of a service's ``config`` (its module must not import the
    driver's SDK: the API validates with it); ``description`` says what a service of
    this driver is (the API schema's text). ``create`` makes a driver instance for one
    connection; ``connection`` says which connection a service's config uses (for
    instance its Docker host; one instance per connection is kept,
    :class:`app.drivers.pool.DriverPool`); ``policy`` lists what a valid config asks
    for that the server's settings do not allow.
    """

    config: type[BaseModel]
    description: str
    create: Callable[[DriverSettings, Any], Driver]
    connection: Callable[[Mapping[str, Any]], Hashable | None] = _one_connection
    policy: Callable[[Any, DriverSettings], list[Problem]] = _no_problems


DRIVERS: CatalogKey[DriverType] = CatalogKey("driver")


def lazy(path: str) -> Callable[[DriverSettings, Any], Driver]:
    """``create`` for a driver class named ``"module:Class"``, imported when the first
    instance is made (so a process that never runs the driver never loads its SDK)."""
    module_name, _, class_name = path.partition(":")

    def create(settings: DriverSettings, connection: Any) -> Driver:
        driver_class = getattr(importlib.import_module(module_name), class_name)
        driver: Driver = driver_class(settings, connection)
        return driver

    return create
