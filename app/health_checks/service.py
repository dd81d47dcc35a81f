"""Creating the daily health check run (by request or by schedule)."""

from __future__ import annotations

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.context import AppContext
from app.db import UnitOfWork
from app.health_checks.plan import plan
from app.runs import service as run_service
from app.runs.models import Run, RunKind


async def create(uow: UnitOfWork, context: AppContext, principal: Principal) -> Run:
    run = await run_service.create_run(
        uow,
        context,
        kind=RunKind.HEALTH_CHECK,
        steps=plan(context.settings),
        requested_by=principal.actor,
    )
    await audit_service.record(
        uow.session,
        principal,
        action="health_check.create",
        resource_type="run",
        resource_id=run.id,
        summary={"steps": len(plan(context.settings))},
    )
    return await run_service.get_run(uow.session, run.id, None)
