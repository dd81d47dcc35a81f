"""Environment and service rules: create, replace (``If-Match``), delete, read, pins.

Every change bumps the row's ``revision`` (its ETag) and writes an audit record in the
same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.auth.scope import may_read, readable
from app.core.db import UnitOfWork, utcnow
from app.core.errors import AppError, NotFound, PreconditionFailed, ValidationFailed
from app.core.pagination import CursorParams, paginate
from app.core.registry import Catalog, CatalogKey
from app.drivers.base import DriverSettings, DriverType
from app.drivers.docker_config import host_name
from app.environments.models import Environment, Pin, Service
from app.environments.schemas import EnvironmentIn, ServiceBody


class EnvironmentNotFound(NotFound):
    type = "/problems/environment-not-found"
    title = "Environment not found"


class ServiceNotFound(NotFound):
    type = "/problems/service-not-found"
    title = "Service not found"


class PinNotFound(NotFound):
    type = "/problems/pin-not-found"
    title = "Pin not found"


class EnvironmentExists(AppError):
    type = "/problems/environment-exists"
    title = "Environment exists"
    status = 409


class DeploymentsActive(AppError):
    type = "/problems/deployments-active"
    title = "Deployments are active"
    status = 409


class Hold(Protocol):
    """Whether unfinished work holds ``environment`` (only its ``service``, when one is
    named), so that it may not be deleted now. A domain above registers its holds in
    :data:`HOLDS` (the deployments: their queued and running deployments), so this
    package needs nothing from the domains above.
    """

    async def __call__(
        self, session: AsyncSession, environment: str, service: str | None
    ) -> bool: ...


HOLDS: CatalogKey[Hold] = CatalogKey("environment hold")


def etag(revision: int) -> str:
    return f'"{revision}"'


def check_if_match(if_match: str | None, revision: int | None) -> None:
    """412 unless ``If-Match`` is absent or names the current revision (``*``: exists)."""
    if not if_match or not if_match.strip():
        return
    if revision is None:
        raise PreconditionFailed("If-Match was given but the resource does not exist")
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    if "*" in tags or etag(revision) in tags:
        return
    raise PreconditionFailed(
        f"the resource changed: its ETag is {etag(revision)}, If-Match gave {if_match}"
    )


async def get_environment(session: AsyncSession, principal: Principal, name: str) -> Environment:
    return readable_environment(
        await session.get(Environment, name, populate_existing=True), principal, name
    )


def readable_environment(
    environment: Environment | None, principal: Principal, name: str
) -> Environment:
    """``environment`` as read for the name ``name``; 404 when there is none or
    ``principal`` may not see it."""
    if environment is None or not may_read(principal, name):
        raise EnvironmentNotFound(f"No environment {name!r}")
    return environment


async def list_page(
    session: AsyncSession, principal: Principal, page: CursorParams
) -> tuple[Sequence[Environment], str | None]:
    statement = readable(select(Environment), Environment.name, principal)
    return await paginate(
        session, statement, page, created_at=Environment.created_at, id=Environment.name
    )


async def services_of(session: AsyncSession, names: Sequence[str]) -> dict[str, list[Service]]:
    rows = await session.scalars(
        select(Service)
        .where(Service.environment.in_(names))
        .order_by(Service.deploy_order, Service.name)
    )
    grouped: dict[str, list[Service]] = {name: [] for name in names}
    for row in rows:
        grouped[row.environment].append(row)
    return grouped


async def pins_of(session: AsyncSession, environment: str) -> dict[str, list[Pin]]:
    grouped: dict[str, list[Pin]] = {}
    for pin in await session.scalars(
        select(Pin).where(Pin.environment == environment).order_by(Pin.created_at)
    ):
        grouped.setdefault(pin.service, []).append(pin)
    return grouped


async def create_environment(
    uow: UnitOfWork, principal: Principal, name: str, body: EnvironmentIn
) -> Environment:
    if await uow.session.get(Environment, name) is not None:
        raise EnvironmentExists(f"Environment {name!r} exists; PUT replaces it")
    now = utcnow()
    environment = Environment(
        name=name,
        description=body.description,
        database=body.database,
        database_url=body.database_url,
        backup_retention_days=body.backup_retention_days,
        backup_smoke_queries=list(body.backup_smoke_queries),
        required_checklist=list(body.required_checklist),
        prometheus_url=body.prometheus_url,
        docker_hosts=_docker_hosts(body),
        redis_url=body.redis_url,
        revision=1,
        created_at=now,
        updated_at=now,
    )
    uow.session.add(environment)
    await uow.session.flush()
    await _audit(uow, principal, "environment.create", name, body.model_dump(mode="json"))
    return environment


async def put_environment(
    uow: UnitOfWork, principal: Principal, name: str, body: EnvironmentIn, if_match: str | None
) -> tuple[Environment, bool]:
    """Create or replace; returns the row and whether it was created."""
    environment = await uow.session.get(Environment, name, with_for_update=True)
    check_if_match(if_match, environment.revision if environment else None)
    if environment is None:
        return await create_environment(uow, principal, name, body), True
    environment.description = body.description
    environment.database = body.database
    environment.database_url = body.database_url
    environment.backup_retention_days = body.backup_retention_days
    environment.backup_smoke_queries = list(body.backup_smoke_queries)
    environment.required_checklist = list(body.required_checklist)
    environment.prometheus_url = body.prometheus_url
    await _check_hosts_kept(uow.session, name, body)
    environment.docker_hosts = _docker_hosts(body)
    environment.redis_url = body.redis_url
    environment.revision += 1
    environment.updated_at = utcnow()
    await uow.session.flush()
    await _audit(uow, principal, "environment.update", name, body.model_dump(mode="json"))
    return environment, False


def _docker_hosts(body: EnvironmentIn) -> list[dict[str, object]]:
    return [host.model_dump(mode="json") for host in body.docker_hosts]


async def _check_hosts_kept(session: AsyncSession, environment: str, body: EnvironmentIn) -> None:
    """422 when the new ``docker_hosts`` drop a host that a service's config names (its
    next deployment could not reach its engine)."""
    kept = {host.name for host in body.docker_hosts}
    services = await session.scalars(select(Service).where(Service.environment == environment))
    orphaned = sorted(
        f"{row.name} ({name})"
        for row in services
        if (name := host_name(row.config or {})) is not None and name not in kept
    )
    if orphaned:
        message = "docker_hosts: services name docker hosts this body drops: " + ", ".join(orphaned)
        raise ValidationFailed(
            message, errors=[{"loc": ["body", "docker_hosts"], "msg": message, "type": "in_use"}]
        )


def _check_docker_host(env: Environment, config: dict[str, object]) -> None:
    """422 when a service's config names a docker host its environment does not have."""
    name = host_name(config)
    if name is None or any(host.get("name") == name for host in env.docker_hosts or []):
        return
    known = ", ".join(str(host.get("name")) for host in env.docker_hosts or []) or "none"
    message = (
        f"docker_host {name!r} is not one of environment {env.name!r}'s docker_hosts "
        f"({known}); give its name or a URL (unix://, tcp://, ssh://)"
    )
    raise ValidationFailed(
        message,
        errors=[{"loc": ["body", "config", "docker_host"], "msg": message, "type": "value_error"}],
    )


async def delete_environment(
    uow: UnitOfWork,
    principal: Principal,
    name: str,
    if_match: str | None,
    *,
    holds: Sequence[Hold],
) -> None:
    environment = await uow.session.get(Environment, name, with_for_update=True)
    if environment is None:
        raise EnvironmentNotFound(f"No environment {name!r}")
    check_if_match(if_match, environment.revision)
    await _refuse_if_held(uow.session, holds, name, None)
    await uow.session.execute(delete(Pin).where(Pin.environment == name))
    await uow.session.execute(delete(Service).where(Service.environment == name))
    await uow.session.delete(environment)
    await uow.session.flush()
    await _audit(uow, principal, "environment.delete", name, {})


async def _refuse_if_held(
    session: AsyncSession, holds: Sequence[Hold], environment: str, service: str | None
) -> None:
    for hold in holds:
        if await hold(session, environment, service):
            raise DeploymentsActive("Deployments are queued or running here; wait or cancel them")


async def get_service(
    session: AsyncSession, principal: Principal, environment: str, name: str
) -> Service:
    await get_environment(session, principal, environment)
    service = await session.scalar(
        select(Service)
        .where(Service.environment == environment, Service.name == name)
        .execution_options(populate_existing=True)
    )
    if service is None:
        raise ServiceNotFound(f"No service {name!r} in environment {environment!r}")
    return service


async def put_service(
    uow: UnitOfWork,
    principal: Principal,
    environment: str,
    name: str,
    body: ServiceBody,
    if_match: str | None,
    *,
    drivers: Catalog[DriverType],
    settings: DriverSettings,
) -> tuple[Service, bool]:
    """``settings``: what the server allows (a docker ``network`` of the host's…), as
    checked by the driver type's ``policy``."""
    _check_policy(body, drivers.get(body.driver), settings)
    # Shared lock: a concurrent delete of the environment finishes first (then 404) or
    # waits, instead of leaving this insert to break the foreign key.
    env = await uow.session.get(Environment, environment, with_for_update={"read": True})
    if env is None:
        raise EnvironmentNotFound(f"No environment {environment!r}")
    config = body.config.model_dump(mode="json")
    _check_docker_host(env, config)
    service = await uow.session.scalar(
        select(Service)
        .where(Service.environment == environment, Service.name == name)
        .with_for_update()
    )
    check_if_match(if_match, service.revision if service else None)
    now = utcnow()
    created = service is None
    if service is None:
        service = Service(environment=environment, name=name, revision=0, created_at=now)
        uow.session.add(service)
    service.driver = body.driver
    service.config = config
    service.health_url = body.health_url
    service.metrics_url = body.metrics_url
    service.health_timeout_seconds = body.health_timeout_seconds
    service.deploy_order = body.deploy_order
    service.settle_seconds = body.settle_seconds
    service.smoke_tests = [t.model_dump(mode="json", exclude_none=True) for t in body.smoke_tests]
    service.revision += 1
    service.updated_at = now
    await uow.session.flush()
    action = "service.create" if created else "service.update"
    await _audit(
        uow,
        principal,
        action,
        f"{environment}/{name}",
        body.model_dump(mode="json", exclude={"config"}),
    )
    return service, created


def _check_policy(body: ServiceBody, driver: DriverType, settings: DriverSettings) -> None:
    problems = driver.policy(body.config, settings)
    if problems:
        raise ValidationFailed(
            "; ".join(message for _, message in problems),
            errors=[
                {"loc": ["body", "config", *loc], "msg": message, "type": "not_allowed"}
                for loc, message in problems
            ],
        )


async def delete_service(
    uow: UnitOfWork,
    principal: Principal,
    environment: str,
    name: str,
    if_match: str | None,
    *,
    holds: Sequence[Hold],
) -> None:
    service = await uow.session.scalar(
        select(Service)
        .where(Service.environment == environment, Service.name == name)
        .with_for_update()
    )
    if service is None:
        raise ServiceNotFound(f"No service {name!r} in environment {environment!r}")
    check_if_match(if_match, service.revision)
    await _refuse_if_held(uow.session, holds, environment, name)
    await uow.session.delete(service)
    await uow.session.flush()
    await _audit(uow, principal, "service.delete", f"{environment}/{name}", {})


async def delete_pin(
    uow: UnitOfWork, principal: Principal, environment: str, service: str, version: str
) -> None:
    await get_service(uow.session, principal, environment, service)
    pin = await uow.session.scalar(
        select(Pin).where(
            Pin.environment == environment, Pin.service == service, Pin.version == version
        )
    )
    if pin is None:
        raise PinNotFound(f"Version {version!r} of {environment}/{service} is not pinned")
    await uow.session.delete(pin)
    await uow.session.flush()
    await _audit(
        uow,
        principal,
        "pin.delete",
        f"{environment}/{service}/{version}",
        {"reason": pin.reason, "deployment_id": pin.deployment_id},
    )


async def _audit(
    uow: UnitOfWork, principal: Principal, action: str, resource_id: str, summary: dict[str, object]
) -> None:
    await audit_service.record(
        uow.session,
        principal,
        action=action,
        resource_type=action.split(".")[0],
        resource_id=resource_id,
        summary=summary,
    )
