"""Environment and service rows as clients see them (with versions, health, pins)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.redaction import redact_text, redact_value
from app.environments import service
from app.environments.models import Environment, Pin, Service
from app.environments.schemas import (
    SMOKE_TEST,
    DockerHostOut,
    EnvironmentOut,
    LastDeployment,
    PinOut,
    ServiceHealth,
    ServiceOut,
)
from app.runs.models import Run


def shown(value: Any, reveal: bool) -> Any:
    """A service's configuration as written for admins (they edit it); for everyone
    else with its secrets hidden (:mod:`app.core.redaction`)."""
    return value if reveal else redact_value(value)


def pin_out(pin: Pin) -> PinOut:
    return PinOut(
        version=pin.version,
        reason=pin.reason,
        deployment_id=pin.deployment_id,
        created_by=pin.created_by,
        created_at=pin.created_at,
    )


async def services_out(
    session: AsyncSession, rows: Sequence[Service], *, reveal: bool
) -> list[ServiceOut]:
    """``reveal``: show environment variable values (admins)."""
    deployment_ids = {r.last_deployment_id for r in rows if r.last_deployment_id}
    runs = {
        run.id: run for run in await session.scalars(select(Run).where(Run.id.in_(deployment_ids)))
    }
    pins: dict[tuple[str, str], list[Pin]] = {}
    for environment in {r.environment for r in rows}:
        for name, items in (await service.pins_of(session, environment)).items():
            pins[(environment, name)] = items
    out = []
    for row in rows:
        run = runs.get(row.last_deployment_id or "")
        out.append(
            ServiceOut(
                environment=row.environment,
                name=row.name,
                driver=row.driver,
                config=shown(row.config, reveal),
                health_url=shown(row.health_url, reveal),
                metrics_url=shown(row.metrics_url, reveal),
                health_timeout_seconds=row.health_timeout_seconds,
                deploy_order=row.deploy_order,
                settle_seconds=row.settle_seconds,
                smoke_tests=[SMOKE_TEST.validate_python(shown(t, reveal)) for t in row.smoke_tests],
                current_version=row.current_version,
                last_deployment=(
                    LastDeployment(id=run.id, status=run.status, finished_at=run.finished_at)
                    if run is not None
                    else None
                ),
                health=(
                    ServiceHealth(
                        status=row.health_status,
                        detail=redact_text(row.health_detail) if row.health_detail else None,
                        checked_at=row.health_checked_at,
                    )
                    if row.health_status
                    else None
                ),
                pins=[pin_out(p) for p in pins.get((row.environment, row.name), [])],
                revision=row.revision,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
        )
    return out


async def environments_out(
    session: AsyncSession, rows: Sequence[Environment], *, reveal: bool
) -> list[EnvironmentOut]:
    grouped = await service.services_of(session, [r.name for r in rows])
    out = []
    for row in rows:
        out.append(
            EnvironmentOut(
                name=row.name,
                description=row.description,
                database=row.database,
                database_url=shown(row.database_url, reveal),
                backup_retention_days=row.backup_retention_days,
                backup_smoke_queries=list(row.backup_smoke_queries or []),
                required_checklist=list(row.required_checklist),
                prometheus_url=shown(row.prometheus_url, reveal),
                docker_hosts=[
                    DockerHostOut.model_validate(shown(host, reveal))
                    for host in row.docker_hosts or []
                ],
                redis_url=shown(row.redis_url, reveal),
                services=await services_out(session, grouped[row.name], reveal=reveal),
                revision=row.revision,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
        )
    return out
