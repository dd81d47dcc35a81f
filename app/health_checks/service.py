"""Creating the daily health check run (by request or by schedule)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.core.context import AppContext
from app.core.db import UnitOfWork
from app.environments.models import Service
from app.health_checks.plan import plan
from app.health_checks.thresholds import levels
from app.runs import service as run_service
from app.runs.models import Run, RunKind
from app.runs.service import StepSpec
from app.thresholds import service as thresholds


async def deployed_services(session: AsyncSession) -> list[tuple[str, str]]:
    """The health URLs of the environments' services that should run (a deployment
    succeeded at least once)."""
    rows = await session.execute(
        select(Service.environment, Service.name, Service.health_url)
        .where(Service.health_url.is_not(None), Service.current_version.is_not(None))
        .order_by(Service.environment, Service.deploy_order, Service.name)
    )
    return [(f"{env}/{name}", str(url)) for env, name, url in rows]


async def steps(session: AsyncSession, context: AppContext) -> list[StepSpec]:
    """The plan, with the levels the thresholds table holds now."""
    current = levels(await thresholds.load(session))
    return plan(context.settings, await deployed_services(session), current)


async def create(uow: UnitOfWork, context: AppContext, principal: Principal) -> Run:
    planned = await steps(uow.session, context)
    run = await run_service.create_run(
        uow,
        context,
        kind=RunKind.HEALTH_CHECK,
        steps=planned,
        requested_by=principal.actor,
    )
    await audit_service.record(
        uow.session,
        principal,
        action="health_check.create",
        resource_type="run",
        resource_id=run.id,
        summary={"steps": len(planned)},
    )
    return run  # as written, its steps with it (nothing read back)
