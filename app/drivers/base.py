"""The driver interface: how a service of an environment is pulled, replaced, checked
and stopped. One implementation per way of running things (``process``, ``docker``).

Drivers are called by step actions in a worker, never by the API. Every operation is
*idempotent* (ensure-state): deploying the version that already runs healthy does
nothing, so a step interrupted by a dead worker can safely run again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
class DriverContext:
    """Host facts and settings a driver may use."""

    state_dir: Path
    docker: DockerSettings = field(default_factory=DockerSettings)

    @classmethod
    def from_settings(cls, settings: Settings) -> DriverContext:
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
