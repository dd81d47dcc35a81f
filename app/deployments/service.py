"""Deployment rules: plan, create (run + deployment + targets + audit + events in one
transaction), read with queue positions, roll back (with pins), cancel, evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, String, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.auth.scope import readable
from app.core.context import AppContext
from app.core.db import UnitOfWork, UTCDateTime, insert_rows, utcnow, write_batch
from app.core.errors import AppError, NotFound
from app.core.pagination import CursorParams, paginate
from app.core.registry import Registry
from app.deployments import events, lifecycle
from app.deployments import plan as deployment_plan
from app.deployments.models import Deployment, DeploymentTarget, TargetState
from app.deployments.schemas import DeploymentRequest
from app.environments import service as environment_service
from app.environments.models import Environment, Pin, Service
from app.maintenances import service as maintenance_service
from app.outbox.service import add_event
from app.runs import service as run_service
from app.runs.models import TERMINAL_STATUSES, Run, RunKind, RunStatus
from app.runs.service import StepSpec


class DeploymentNotFound(NotFound):
    type = "/problems/deployment-not-found"
    title = "Deployment not found"


class VersionPinned(AppError):
    type = "/problems/version-pinned"
    title = "Version pinned"
    status = 409


class NotRollbackable(AppError):
    type = "/problems/not-rollbackable"
    title = "Cannot roll back this deployment"
    status = 409


class EvidenceNotReady(AppError):
    type = "/problems/deployment-not-finished"
    title = "Deployment not finished"
    status = 409


class UnknownService(NotFound):
    type = "/problems/service-not-found"
    title = "Service not found"


@dataclass
class Planned:
    environment: Environment
    targets: list[deployment_plan.PlannedTarget]
    steps: list[StepSpec]
    backup: bool
    checklist_missing: list[str]
    ahead: int = 0  # deployments queued or running before it on its services


async def plan(
    session: AsyncSession, registry: Registry, principal: Principal, body: DeploymentRequest
) -> Planned:
    """Everything a deployment request is checked against, and its concrete steps. A
    maintenance window freezing the environment refuses it (a dry run too); rollbacks
    are not planned here, so a broken deployment can always be rolled back.

    What it is checked against is read in one statement (:func:`_plan_reads`), then
    checked in this order: the environment (404), a freezing window (409), unknown
    services (404), pinned versions (409)."""
    now = utcnow()
    wanted = body.targets()
    parameters: dict[str, Any] = {"environment": body.environment, "now": now}
    for number, (name, version) in enumerate(wanted):
        parameters |= {f"service_{number}": name, f"version_{number}": version}
    reads = (await session.execute(_plan_reads(len(wanted)), parameters)).all()
    environment = environment_service.readable_environment(
        reads[0].Environment if reads else None, principal, body.environment
    )
    if reads[0].freeze is not None:  # names the window (read again) and refuses
        await maintenance_service.check_not_frozen(session, environment.name, now)
    rows = {r.Service.name: r.Service for r in reads if r.Service is not None}
    unknown = [name for name, _ in wanted if name not in rows]
    if unknown:
        raise UnknownService(
            f"environment {environment.name!r} has no service {', '.join(map(repr, unknown))}",
            errors=[
                {"loc": ["body", "service"], "msg": f"unknown service {n!r}", "type": "not_found"}
                for n in unknown
            ],
        )
    pins = {(r.Pin.service, r.Pin.version): r.Pin for r in reads if r.Pin is not None}
    for name, version in wanted:
        pin = pins.get((name, version))
        if pin is not None:
            raise _pinned(environment.name, name, version, pin)
    targets = [deployment_plan.PlannedTarget(rows[name], version) for name, version in wanted]
    backup = environment.database is not None and body.backup is not False
    steps = run_service.validate_plan(
        registry,
        deployment_plan.plan(environment, targets, checklist=list(body.checklist), backup=backup),
    )
    missing = [i for i in environment.required_checklist if i not in body.checklist]
    return Planned(environment, targets, steps, backup, missing, int(reads[0].ahead or 0))


_PLAN_READS: dict[int, Any] = {}


def _plan_reads(services: int) -> Any:
    """The statement reading a plan of ``services`` services, built once per number of
    services, with bind parameters ``environment``, ``now``, ``service_<i>`` and
    ``version_<i>``. One row per requested service that exists (or one without a
    service when none does; none when the environment does not exist): the environment,
    the service, the pin of the requested version if any, the id of a window freezing
    the environment at ``now``, and the deployments waiting on those services
    (:func:`waiting_ahead`)."""
    statement = _PLAN_READS.get(services)
    if statement is not None:
        return statement
    environment = bindparam("environment", type_=String())
    now = bindparam("now", type_=UTCDateTime())
    names = [bindparam(f"service_{i}", type_=String()) for i in range(services)]
    versions = [bindparam(f"version_{i}", type_=String()) for i in range(services)]
    pairs = zip(names, versions, strict=True)
    requested = or_(*(and_(Pin.service == n, Pin.version == v) for n, v in pairs))
    statement = (
        select(
            Environment,
            Service,
            Pin,
            maintenance_service.freezing_window_id(environment, now).label("freeze"),
            _waiting(environment, names).scalar_subquery().label("ahead"),
        )
        .outerjoin(Service, and_(Service.environment == Environment.name, Service.name.in_(names)))
        .outerjoin(
            Pin, and_(Pin.environment == Environment.name, Pin.service == Service.name, requested)
        )
        .where(Environment.name == environment)
        .execution_options(populate_existing=True)
    )
    _PLAN_READS[services] = statement  # a request names 1 to 20 services
    return statement


def _pinned(environment: str, name: str, version: str, pin: Pin) -> VersionPinned:
    return VersionPinned(
        f"{name} {version} is pinned in {environment} ({pin.reason}); an operator "
        f"unpins it with DELETE /v1/environments/{environment}/services/{name}/pins/"
        f"{version}",
        extra={"service": name, "version": version, "pinned_by": pin.deployment_id},
    )


async def _refuse_pinned(
    session: AsyncSession, environment: str, wanted: Sequence[tuple[str, str]]
) -> None:
    for name, version in wanted:
        pin = await session.scalar(
            select(Pin).where(
                Pin.environment == environment, Pin.service == name, Pin.version == version
            )
        )
        if pin is not None:
            raise _pinned(environment, name, version, pin)


def _waiting(
    environment: str | ColumnElement[str], services: Sequence[str | ColumnElement[str]]
) -> Select[int]:
    return select(func.count(func.distinct(DeploymentTarget.deployment_id))).where(
        DeploymentTarget.environment == environment,
        DeploymentTarget.service.in_(services),
        DeploymentTarget.state != TargetState.DONE.value,
    )


async def waiting_ahead(session: AsyncSession, environment: str, services: list[str]) -> int:
    """How many deployments are queued or running on any of ``services``."""
    return int(await session.scalar(_waiting(environment, services)) or 0)


@dataclass(frozen=True)
class Created:
    """A new deployment as written (its answer needs no further query)."""

    run: Run
    deployment: Deployment
    targets: list[DeploymentTarget]
    queue_position: int


async def create(
    uow: UnitOfWork, context: AppContext, principal: Principal, body: DeploymentRequest
) -> Created:
    planned = await plan(uow.session, context.registry, principal, body)
    return await _create_run(
        uow,
        context,
        principal,
        kind=RunKind.DEPLOYMENT,
        environment=planned.environment,
        targets=[(t.service.name, t.version) for t in planned.targets],
        steps=planned.steps,
        checklist=list(body.checklist),
        backup=planned.backup,
        auto_rollback=body.auto_rollback,
        ref=body.ref,
        description=body.description,
        request=body.model_dump(mode="json", exclude_none=True),
        ahead=planned.ahead,
    )


async def _create_run(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    *,
    kind: RunKind,
    environment: Environment,
    targets: list[tuple[str, str]],
    steps: list[StepSpec],
    checklist: list[str],
    backup: bool,
    auto_rollback: bool,
    ref: str | None,
    description: str,
    request: dict[str, Any],
    rollback_of: str | None = None,
    ahead: int | None = None,
) -> Created:
    if ahead is None:
        ahead = await waiting_ahead(uow.session, environment.name, [name for name, _ in targets])
    # The run, its steps and first event, the deployment, its targets and both outbox
    # events: one statement on PostgreSQL (app.core.db.write_batch).
    async with write_batch(uow.session):
        run = await run_service.create_run(
            uow,
            context,
            kind=kind,
            steps=steps,
            params={"auto_rollback": auto_rollback},
            requested_by=principal.actor,
            environment=environment.name,
        )
        now = run.created_at
        deployment = Deployment(
            id=run.id,
            kind=kind.value,
            environment=environment.name,
            ref=ref,
            description=description,
            checklist=checklist,
            required_checklist=list(environment.required_checklist),
            backup=backup,
            auto_rollback=auto_rollback,
            rollback_of=rollback_of,
            requested_by=principal.actor,
            request=request,
            created_at=now,
        )
        rows = [
            DeploymentTarget(
                deployment_id=run.id,
                position=position,
                environment=environment.name,
                service=name,
                version=version,
                previous_version=None,
                touched=False,
                state=TargetState.QUEUED.value,
                created_at=now,
            )
            for position, (name, version) in enumerate(targets)
        ]
        await insert_rows(uow.session, [deployment])  # before its targets (foreign key)
        await insert_rows(uow.session, rows)  # one multi-row INSERT
        services = [{"name": n, "version": v} for n, v in targets]
        await add_event(
            uow.session,
            "deployment.queued",
            events.data(run.id, kind.value, environment.name, run.status, rows, ref),
        )
    await audit_service.record(
        uow.session,
        principal,
        action=f"{kind.value}.create",
        resource_type="deployment",
        resource_id=run.id,
        summary={"environment": environment.name, "services": services, "ref": ref},
    )
    return Created(run, deployment, rows, ahead)


async def get(session: AsyncSession, principal: Principal, deployment_id: str) -> Run:
    run = await run_service.get_run(session, deployment_id, principal)
    if run.kind not in (RunKind.DEPLOYMENT, RunKind.ROLLBACK):
        raise DeploymentNotFound(f"No deployment {deployment_id!r}")
    return run


async def get_or_404(session: AsyncSession, principal: Principal, deployment_id: str) -> Run:
    try:
        return await get(session, principal, deployment_id)
    except run_service.RunNotFound:
        raise DeploymentNotFound(f"No deployment {deployment_id!r}") from None


@dataclass(frozen=True)
class Filters:
    environment: str | None = None
    service: str | None = None
    status: RunStatus | None = None


async def list_page(
    session: AsyncSession, principal: Principal, filters: Filters, page: CursorParams
) -> tuple[Sequence[Run], str | None]:
    statement = (
        select(Run)
        .where(Run.kind.in_([RunKind.DEPLOYMENT.value, RunKind.ROLLBACK.value]))
        .options(selectinload(Run.steps))
    )
    statement = readable(statement, Run.environment, principal)
    if filters.environment is not None:
        statement = statement.where(Run.environment == filters.environment)
    if filters.status is not None:
        statement = statement.where(Run.status == filters.status.value)
    if filters.service is not None:
        statement = statement.where(
            Run.id.in_(
                select(DeploymentTarget.deployment_id).where(
                    DeploymentTarget.service == filters.service
                )
            )
        )
    return await paginate(session, statement, page, created_at=Run.created_at, id=Run.id)


async def details(
    session: AsyncSession, runs: Sequence[Run]
) -> tuple[dict[str, Deployment], dict[str, list[DeploymentTarget]], dict[str, int]]:
    ids = [r.id for r in runs]
    deployments = {
        d.id: d for d in await session.scalars(select(Deployment).where(Deployment.id.in_(ids)))
    }
    targets: dict[str, list[DeploymentTarget]] = {i: [] for i in ids}
    for t in await session.scalars(
        select(DeploymentTarget)
        .where(DeploymentTarget.deployment_id.in_(ids))
        .order_by(DeploymentTarget.position)
    ):
        targets[t.deployment_id].append(t)
    queued = [r.id for r in runs if r.status == RunStatus.QUEUED]
    positions = await lifecycle.queue_positions(session, queued)
    return deployments, targets, {i: positions.get(i, 0) for i in queued}


async def rollback(
    uow: UnitOfWork, context: AppContext, principal: Principal, deployment_id: str
) -> Created:
    """A new deployment (kind ``rollback``) back to what ran before ``deployment_id``;
    its versions are pinned so automation cannot deploy them again."""
    run = await get_or_404(uow.session, principal, deployment_id)
    if run.status != RunStatus.SUCCESS:
        raise NotRollbackable(
            f"deployment {deployment_id} is {run.status}: only a successful deployment is "
            "rolled back (a failed one was rolled back automatically or changed nothing)"
        )
    targets = list(
        await uow.session.scalars(
            select(DeploymentTarget)
            .where(DeploymentTarget.deployment_id == deployment_id)
            .order_by(DeploymentTarget.position)
        )
    )
    missing = [t.service for t in targets if t.previous_version is None]
    if missing:
        raise NotRollbackable(
            f"nothing ran before deployment {deployment_id} on {', '.join(missing)}: "
            "there is no version to roll back to"
        )
    environment = await environment_service.get_environment(
        uow.session, principal, run.environment or ""
    )
    rows = {
        s.name: s
        for s in await uow.session.scalars(
            select(Service).where(
                Service.environment == environment.name,
                Service.name.in_([t.service for t in targets]),
            )
        )
    }
    gone = [t.service for t in targets if t.service not in rows]
    if gone:
        raise NotRollbackable(f"service {', '.join(gone)} no longer exists")
    back = [(t.service, str(t.previous_version)) for t in targets]
    await _refuse_pinned(uow.session, environment.name, back)
    planned = [deployment_plan.PlannedTarget(rows[name], version) for name, version in back]
    steps = deployment_plan.plan(
        environment, planned, checklist=[], backup=False, rollback_of=deployment_id
    )
    for t in targets:
        reason = f"rolled back by {principal.actor}"
        if await lifecycle.pin(
            uow.session,
            t.environment,
            t.service,
            t.version,
            reason,
            deployment_id,
            created_by=principal.actor,
        ):
            await audit_service.record(
                uow.session,
                principal,
                action="pin.create",
                resource_type="pin",
                resource_id=f"{t.environment}/{t.service}/{t.version}",
                summary={"reason": reason, "deployment_id": deployment_id},
            )
    return await _create_run(
        uow,
        context,
        principal,
        kind=RunKind.ROLLBACK,
        environment=environment,
        targets=back,
        steps=steps,
        checklist=[],
        backup=False,
        auto_rollback=False,
        ref=None,
        description=f"rollback of deployment {deployment_id}",
        request={"rollback_of": deployment_id},
        rollback_of=deployment_id,
    )


async def cancel(
    uow: UnitOfWork, context: AppContext, principal: Principal, deployment_id: str
) -> Run:
    await get_or_404(uow.session, principal, deployment_id)
    return await run_service.cancel(uow, context, principal, deployment_id)


async def evidence(
    session: AsyncSession, principal: Principal, deployment_id: str
) -> dict[str, Any]:
    run = await get_or_404(session, principal, deployment_id)
    if RunStatus(run.status) not in TERMINAL_STATUSES:
        raise EvidenceNotReady(
            f"deployment {deployment_id} is {run.status}; its evidence is written when it ends"
        )
    deployment = await session.get(Deployment, deployment_id)
    if deployment is None or deployment.evidence is None:
        raise EvidenceNotReady(f"deployment {deployment_id} has no evidence record yet")
    return deployment.evidence
