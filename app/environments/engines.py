"""Where a service's driver runs: a docker service's ``config.docker_host`` may name one
of its environment's ``docker_hosts``; the name is resolved here, when a step runs (never
stored in a step's parameters: the TLS key stays in the environment's row), and the
driver pool gets the engine (URL and TLS identity) to keep one client for.

The drivers do not read environments (the layers forbid it): this module, above them,
does.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.context import AppContext
from app.drivers.base import Driver, DriverError, ServiceSpec
from app.drivers.docker_config import DockerEngine, DockerHost, host_name
from app.drivers.pool import drivers
from app.environments.models import Environment


class UnknownDockerHost(DriverError):
    """The config names a docker host its environment does not have (any more)."""


async def docker_hosts(session: AsyncSession, environment: str) -> list[DockerHost]:
    row = await session.get(Environment, environment)
    return [DockerHost.model_validate(host) for host in (row.docker_hosts if row else None) or []]


async def engine_of(
    session: AsyncSession, environment: str, docker_host: str | None
) -> DockerEngine | None:
    """The engine a service's ``docker_host`` means: None (the local engine) when unset,
    the URL when it is one, else the environment's docker host of that name."""
    if not docker_host:
        return None
    name = host_name({"docker_host": docker_host})
    if name is None:
        return DockerEngine(docker_host)
    for host in await docker_hosts(session, environment):
        if host.name == name:
            return host.engine()
    raise UnknownDockerHost(
        f"docker_host {name!r} is not one of environment {environment!r}'s docker_hosts"
    )


async def driver_for(context: AppContext, spec: ServiceSpec) -> Driver:
    """The long-lived driver instance of the service's driver and engine."""
    pool = drivers(context)
    if host_name(spec.config) is None:
        return pool.get(spec.driver, spec.config)
    async with context.sessionmaker() as session:
        engine = await engine_of(session, spec.environment, spec.config.get("docker_host"))
    return pool.get(spec.driver, spec.config, connection=engine)
