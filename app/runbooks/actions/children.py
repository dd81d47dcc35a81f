"""Step actions that start a first-class operation as a run of its own kind and wait for
its end: ``health_check`` (the daily health check), ``backup`` (a backup of an
environment's database, or of the control plane's) and ``deployment`` (one service to a
version; by default the version it runs, which pulls its image again and restarts it).

The child run is created through the same service functions as the API, so it keeps its
rules (one deployment per service, freezes, checklists, audit). It is requested by
``run:<parent id>:<step position>``: a resumed step finds the child it started instead of
starting a second one, so these actions are idempotent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field
from sqlalchemy import select

from app.auth.principal import Principal
from app.auth.roles import Role
from app.backups import operations as backup_operations
from app.backups import retention
from app.core.context import AppContext
from app.core.db import UnitOfWork
from app.core.errors import AppError
from app.core.registry import Registry
from app.deployments import service as deployment_service
from app.deployments.schemas import DeploymentCreate
from app.environments.models import Service
from app.health_checks import service as health_check_service
from app.runs import service as run_service
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome
from app.runs.models import Level, Run, RunKind, RunStatus, StepStatus

NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
Starter = Callable[[UnitOfWork, AppContext, Principal], Awaitable[Run]]


class ChildParams(Params):
    wait_seconds: float = Field(
        default=3600, gt=0, le=7 * 86400, description="How long to wait for its end."
    )


class HealthCheckParams(ChildParams):
    pass


class BackupParams(ChildParams):
    environment: str | None = Field(
        default=None, pattern=NAME, description="Whose database; none: the control plane's."
    )


class DeploymentParams(ChildParams):
    environment: str = Field(pattern=NAME)
    service: str = Field(pattern=NAME)
    version: str | None = Field(
        default=None,
        pattern=VERSION,
        description="None: the version it runs now (its image pulled again, restarted).",
    )
    checklist: list[str] = Field(default_factory=list, max_length=20)
    backup: bool | None = None


def _requester(ctx: StepContext) -> str:
    return f"run:{ctx.run_id}:{ctx.position}"


async def _child(context: AppContext, kind: RunKind, requester: str) -> Run | None:
    async with context.sessionmaker() as session:
        found = await session.scalars(
            select(Run)
            .where(Run.requested_by == requester, Run.kind == kind.value)
            .order_by(Run.created_at.desc())
            .limit(1)
        )
        return found.first()


async def _start_and_wait(
    ctx: StepContext, kind: RunKind, role: Role, start: Starter, wait_seconds: float
) -> StepOutcome:
    context = ctx.context
    requester = _requester(ctx)
    child = await _child(context, kind, requester)
    if child is None:
        principal = Principal.system(requester, role)
        try:
            async with context.unit_of_work() as uow:
                child = await start(uow, context, principal)
        except AppError as refused:
            return StepOutcome(
                StepStatus.FAILURE,
                error=f"the {kind.value.replace('_', ' ')} was refused: {refused.detail}",
                data={"summary": f"refused: {refused.detail}"},
            )
        await ctx.log(f"started {kind.value} {child.id}")
    else:
        await ctx.log(f"following the {kind.value} {child.id} this step started before")
    ended = await run_service.wait_terminal(context, child.id, None, wait_seconds)
    return _outcome(kind, ended)


def _outcome(kind: RunKind, child: Run) -> StepOutcome:
    result = child.result or {}
    data: dict[str, Any] = {"run_id": child.id, "kind": kind.value, "status": child.status}
    what = kind.value.replace("_", " ")
    if kind == RunKind.HEALTH_CHECK and "overall" in result:
        data |= {k: result.get(k) for k in ("overall", "critical", "warning")}
    if child.status == RunStatus.SUCCESS:
        level = Level(result["overall"]) if result.get("overall") in set(Level) else None
        data["summary"] = f"{what} {child.id} succeeded" + (
            f" ({result['overall']})" if result.get("overall") else ""
        )
        return StepOutcome(StepStatus.SUCCESS, data["summary"], level, data)
    if child.status in (RunStatus.QUEUED, RunStatus.IN_PROGRESS):
        data["summary"] = f"{what} {child.id} did not end in time ({child.status})"
        return StepOutcome(
            StepStatus.FAILURE, data["summary"], Level.CRITICAL, data, error=data["summary"]
        )
    detail = child.failure_detail or child.failure_type or child.status
    data["summary"] = f"{what} {child.id} ended {child.status}: {detail}"
    return StepOutcome(
        StepStatus.FAILURE, data["summary"], Level.CRITICAL, data, error=data["summary"]
    )


async def health_check(params: HealthCheckParams, ctx: StepContext) -> StepOutcome:
    return await _start_and_wait(
        ctx, RunKind.HEALTH_CHECK, Role.OPERATOR, health_check_service.create, params.wait_seconds
    )


async def backup(params: BackupParams, ctx: StepContext) -> StepOutcome:
    async def start(uow: UnitOfWork, context: AppContext, principal: Principal) -> Run:
        run, _ = await backup_operations.create_backup(uow, context, principal, params.environment)
        return run

    return await _start_and_wait(ctx, RunKind.BACKUP, Role.OPERATOR, start, params.wait_seconds)


async def deployment(params: DeploymentParams, ctx: StepContext) -> StepOutcome:
    version = params.version
    if version is None:
        async with ctx.context.sessionmaker() as session:
            version = await session.scalar(
                select(Service.current_version).where(
                    Service.environment == params.environment, Service.name == params.service
                )
            )
        if version is None:
            return StepOutcome(
                StepStatus.FAILURE,
                error=f"{params.environment}/{params.service} runs no version yet; give one",
            )

    async def start(uow: UnitOfWork, context: AppContext, principal: Principal) -> Run:
        body = DeploymentCreate.model_validate(
            {
                "environment": params.environment,
                "service": params.service,
                "version": str(version),
                "checklist": list(params.checklist),
                "backup": params.backup,
                "description": "started by a runbook",
            }
        )
        created = await deployment_service.create(uow, context, principal, body)
        return created.run

    return await _start_and_wait(ctx, RunKind.DEPLOYMENT, Role.DEPLOYER, start, params.wait_seconds)


class RetentionParams(Params):
    pass


async def backup_retention(params: RetentionParams, ctx: StepContext) -> StepOutcome:
    """The backups' retention now (the daily job's rule: older than the environment's
    retention, never the newest verified one; each deletion audited)."""
    done = await retention.apply(ctx.context)
    summary = (
        f"deleted {len(done.deleted)} expired backups, kept {len(done.kept_newest_verified)} "
        f"as the newest verified, removed {done.partials_removed} partial objects"
    )
    data = {
        "deleted": done.deleted[:200],
        "kept_newest_verified": done.kept_newest_verified[:200],
        "partials_removed": done.partials_removed,
        "summary": summary,
    }
    return StepOutcome(StepStatus.SUCCESS, summary, None, data)


def register(registry: Registry) -> None:
    actions = registry[ACTIONS]
    actions.add("health_check", Action(HealthCheckParams, health_check, idempotent=True))
    actions.add("backup", Action(BackupParams, backup, idempotent=True))
    actions.add("deployment", Action(DeploymentParams, deployment, idempotent=True))
    actions.add("backup_retention", Action(RetentionParams, backup_retention, idempotent=True))
