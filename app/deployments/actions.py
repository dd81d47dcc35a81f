"""The step actions of a deployment: checklist gate, backup, pull, deploy, verify, and
the rollback of one service. Each calls a driver (:mod:`app.drivers`) and records what it
observed on the service (health) and the deployment target (touched, previous version).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import Field
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from app.backups import service as backups
from app.backups.models import BackupOrigin, BackupStatus
from app.core.db import utcnow
from app.core.redaction import Scrubber
from app.core.schemas import HTTP_URL
from app.deployments import verification
from app.deployments.models import DeploymentTarget
from app.deployments.verification import MIN_WINDOW_SECONDS
from app.drivers.base import Driver, DriverError, ServiceSpec, UnhealthyError
from app.environments.checklist import CHECKLIST_ITEMS
from app.environments.engines import driver_for
from app.environments.models import Pin, Service
from app.runs.actions import Params, StepContext, StepOutcome
from app.runs.models import StepStatus
from app.thresholds import service as threshold_service

logger = logging.getLogger(__name__)


class ServiceParams(Params):
    environment: str
    name: str
    driver: str
    config: dict[str, Any]
    health_url: str | None = None
    health_timeout_seconds: float = 30.0

    def spec(self) -> ServiceSpec:
        return ServiceSpec(
            self.environment,
            self.name,
            self.driver,
            self.config,
            self.health_url,
            self.health_timeout_seconds,
        )


async def _driver(ctx: StepContext, spec: ServiceSpec) -> Driver:
    """The long-lived driver instance for the service (its driver and connection)."""
    return await driver_for(ctx.context, spec)


def _failure(problem: str, message: str, data: dict[str, Any] | None = None) -> StepOutcome:
    return StepOutcome(
        StepStatus.FAILURE, message, data={"problem": problem, **(data or {})}, error=message
    )


# -- checklist gate --------------------------------------------------------------------


class TargetParams(Params):
    service: str
    version: str


class ChecklistParams(Params):
    environment: str
    targets: list[TargetParams]
    answers: list[str] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)


async def checklist(params: ChecklistParams, ctx: StepContext) -> StepOutcome:
    """The runbook's pre-deployment checklist, and no pinned version: nothing is touched
    before this passes."""
    missing = [item for item in params.required if item not in params.answers]
    if missing:
        names = ", ".join(missing)
        return _failure(
            "checklist-incomplete",
            f"required checklist items not confirmed: {names}",
            {"missing": missing, "answers": params.answers, "required": params.required},
        )
    async with ctx.context.sessionmaker() as session:
        pinned = [
            f"{p.service} {p.version}"
            for t in params.targets
            for p in await session.scalars(
                select(Pin).where(
                    Pin.environment == params.environment,
                    Pin.service == t.service,
                    Pin.version == t.version,
                )
            )
        ]
    if pinned:
        return _failure("version-pinned", f"pinned (blocked) since queued: {', '.join(pinned)}")
    confirmed = len(params.answers)
    required = (
        f"every required item ({', '.join(params.required)}) among them"
        if params.required
        else "none required"
    )
    # The first line is the step's one-line summary (the command line shows only it).
    lines = [f"passed: {confirmed} of {len(CHECKLIST_ITEMS)} items confirmed, {required}"]
    lines += [
        f"[x] {CHECKLIST_ITEMS.get(item, item)}"
        + (" (required)" if item in params.required else "")
        for item in params.answers
    ]
    lines += [f"[ ] {label}" for key, label in CHECKLIST_ITEMS.items() if key not in params.answers]
    return StepOutcome(
        StepStatus.SUCCESS,
        "\n".join(lines),
        data={"answers": params.answers, "required": params.required},
    )


# -- backup ----------------------------------------------------------------------------


class BackupParams(Params):
    environment: str
    database: str


async def backup_database(params: BackupParams, ctx: StepContext) -> StepOutcome:
    """The pre-deploy backup of the environment's database: dumped, stored and read
    back before anything is deployed; the deployment fails when it fails. Run again
    after its worker died, it first fails the backup that worker left unfinished."""
    await backups.supersede(ctx.context, ctx.run_id)
    try:
        async with ctx.context.unit_of_work() as uow:
            backup = await backups.prepare(
                uow.session,
                ctx.context,
                environment=params.environment,
                run_id=ctx.run_id,
                origin=BackupOrigin.DEPLOYMENT,
            )
            backup_id = backup.id
    except backups.BackupError as refused:
        return StepOutcome(StepStatus.FAILURE, str(refused), error=str(refused))
    row = await backups.perform(ctx.context, backup_id, ctx.log)
    data = {
        "backup_id": row.id,
        "status": row.status,
        "storage_url": row.storage_url,
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "row_counts": row.row_counts,
    }
    if row.status != BackupStatus.SUCCESS:
        reason = f"the pre-deploy backup of {params.database!r} failed: {row.error}"
        return StepOutcome(StepStatus.FAILURE, reason, data=data, error=reason)
    summary = f"backup {row.id}: {row.size_bytes} bytes at {row.storage_url}"
    return StepOutcome(StepStatus.SUCCESS, summary, data=data)


# -- pull / deploy / verify --------------------------------------------------------------


class VersionParams(Params):
    service: ServiceParams
    version: str


async def pull(params: VersionParams, ctx: StepContext) -> StepOutcome:
    spec = params.service.spec()
    driver = await _driver(ctx, spec)
    try:
        output = await driver.pull(spec, params.version, ctx.log)
    except DriverError as exc:
        return _failure("pull-failed", f"pull of {params.version} failed: {exc}")
    return StepOutcome(StepStatus.SUCCESS, output, data={"version": params.version})


class DeployParams(VersionParams):
    settle_seconds: float = Field(default=0, ge=0, le=3600)


async def deploy(params: DeployParams, ctx: StepContext) -> StepOutcome:
    """Replace what runs by the version (idempotent: the version already running healthy
    is left alone), then wait the settle time."""
    spec = params.service.spec()
    driver = await _driver(ctx, spec)
    before = await driver.current(spec)
    await _mark_touched(ctx, spec.name, before.version if before else None)
    try:
        result = await driver.deploy(spec, params.version, ctx.log)
    except UnhealthyError as exc:
        await _record_health(ctx, spec, False, str(exc))
        return _failure(
            "health-check-failed", f"{spec.name} {params.version} is not healthy: {exc}"
        )
    except DriverError as exc:
        return _failure("deploy-failed", f"deploy of {spec.name} {params.version} failed: {exc}")
    await _record_health(ctx, spec, True, f"{params.version} started")
    if params.settle_seconds and result.changed:
        await ctx.log(f"settling for {params.settle_seconds:g} s")
        await asyncio.sleep(params.settle_seconds)
    return StepOutcome(
        StepStatus.SUCCESS,
        result.output or f"{spec.name}: {result.previous_version} -> {result.version}",
        data={
            "version": result.version,
            "previous_version": result.previous_version,
            "changed": result.changed,
            **result.details,
        },
    )


class VerifyParams(VersionParams):
    post_deploy: bool = False
    # Post-deployment only: where the error rate and latency are measured, and over what.
    prometheus_url: str | None = Field(default=None, pattern=HTTP_URL, max_length=2000)
    metrics_url: str | None = Field(default=None, pattern=HTTP_URL, max_length=2000)
    window_seconds: float = Field(default=MIN_WINDOW_SECONDS, ge=MIN_WINDOW_SECONDS, le=3600)


async def verify(params: VerifyParams, ctx: StepContext) -> StepOutcome:
    """The service is healthy and reports the deployed version (when it reports one);
    after deployment also: its error rate and p95 latency over the settle window are not
    above a critical threshold (a warning is recorded and passes)."""
    spec = params.service.spec()
    problem = "post-deploy-check-failed" if params.post_deploy else "health-check-failed"
    health = await (await _driver(ctx, spec)).health(spec)
    data: dict[str, Any] = {
        "healthy": health.healthy,
        "version": health.version,
        "status_code": health.status_code,
        "latency_ms": health.latency_ms,
    }
    await _record_health(ctx, spec, health.healthy, health.detail)
    if not health.healthy:
        return _failure(problem, f"{spec.name} is not healthy: {health.detail}", data)
    if health.version is not None and health.version != params.version:
        return _failure(
            problem,
            f"{spec.name} reports version {health.version}, expected {params.version}",
            data,
        )
    if not params.post_deploy:
        return StepOutcome(StepStatus.SUCCESS, health.detail, data=data)
    return await _verify_thresholds(params, ctx, health.detail, data)


async def _verify_thresholds(
    params: VerifyParams, ctx: StepContext, health_detail: str, data: dict[str, Any]
) -> StepOutcome:
    spec = params.service.spec()
    async with ctx.context.sessionmaker() as session:
        thresholds = await threshold_service.load(session)
    if params.prometheus_url or params.metrics_url:
        await ctx.log(f"measuring {spec.name} over {params.window_seconds:g} s")
    checked = await verification.verify(
        ctx.context.http,
        thresholds,
        environment=spec.environment,
        service=spec.name,
        prometheus_url=params.prometheus_url,
        metrics_url=params.metrics_url,
        window_seconds=params.window_seconds,
    )
    data["verification"] = checked.as_data()
    for m in checked.measurements:
        data[m.threshold] = m.value if m.value is not None else f"not measured: {m.detail}"
    lines = [verification.describe(m) for m in checked.measurements]
    breaches = checked.breaches()
    if breaches:
        worst = breaches[0]
        data["breached"] = {
            "threshold": worst.threshold,
            "value": worst.value,
            "critical": worst.critical,
            "unit": worst.unit,
            "source": checked.source,
        }
        message = "; ".join(verification.describe(m) for m in breaches)
        return StepOutcome(
            StepStatus.FAILURE,
            "\n".join([f"threshold breached: {message}", health_detail, *lines]),
            data={"problem": "threshold-breached", **data},
            error=f"threshold breached: {message}",
        )
    measured = any(m.value is not None for m in checked.measurements)
    summary = "thresholds: " + (
        "warning" if checked.warnings() else "ok" if measured else "not measured"
    )
    return StepOutcome(StepStatus.SUCCESS, "\n".join([summary, health_detail, *lines]), data=data)


# -- rollback --------------------------------------------------------------------------


class RollbackParams(Params):
    service: ServiceParams
    failed_version: str


async def rollback_service(params: RollbackParams, ctx: StepContext) -> StepOutcome:
    """Back to the service's last successful version, if this deployment changed it."""
    spec = params.service.spec()
    async with ctx.context.sessionmaker() as session:
        target = await session.scalar(
            select(DeploymentTarget).where(
                DeploymentTarget.deployment_id == ctx.run_id,
                DeploymentTarget.service == spec.name,
            )
        )
        service = await session.scalar(
            select(Service).where(
                Service.environment == spec.environment, Service.name == spec.name
            )
        )
    if target is None or not target.touched:
        return StepOutcome(
            StepStatus.SKIPPED,
            f"{spec.name} was not changed by this deployment",
            data={"changed": False},
        )
    to_version = service.current_version if service is not None else None
    driver = await _driver(ctx, spec)
    if to_version is None:
        await driver.stop(spec, ctx.log)
        return StepOutcome(
            StepStatus.SUCCESS,
            f"{spec.name} had no earlier successful version: stopped",
            data={"to_version": None, "stopped": True},
        )
    try:
        result = await driver.deploy(spec, to_version, ctx.log)
    except DriverError as exc:
        await _record_health(ctx, spec, False, str(exc))
        return _failure("rollback-failed", f"rollback of {spec.name} to {to_version} failed: {exc}")
    await _record_health(ctx, spec, True, f"rolled back to {to_version}")
    return StepOutcome(
        StepStatus.SUCCESS,
        f"{spec.name}: {params.failed_version} -> {to_version}",
        data={"to_version": to_version, "from_version": params.failed_version, **result.details},
    )


# -- records ---------------------------------------------------------------------------


async def _mark_touched(ctx: StepContext, service: str, previous: str | None) -> None:
    """Committed before the driver changes anything: a worker that dies mid-deploy
    leaves a record that the rollback must consider this service."""
    async with ctx.context.unit_of_work() as uow:
        target = await uow.session.scalar(
            select(DeploymentTarget).where(
                DeploymentTarget.deployment_id == ctx.run_id, DeploymentTarget.service == service
            )
        )
        if target is not None and not target.touched:
            target.touched = True
            target.previous_version = previous


async def _record_health(ctx: StepContext, spec: ServiceSpec, healthy: bool, detail: str) -> None:
    """What a deployment last saw of the service (shown on it; best effort)."""
    try:
        await _write_health(ctx, spec, healthy, detail)
    except SQLAlchemyError:
        logger.warning("could not record the health of %s/%s", spec.environment, spec.name)


async def _write_health(ctx: StepContext, spec: ServiceSpec, healthy: bool, detail: str) -> None:
    detail = Scrubber.of(spec.config, spec.health_url).text(detail)  # shown to viewers
    async with ctx.context.unit_of_work() as uow:
        await uow.session.execute(
            update(Service)
            .where(Service.environment == spec.environment, Service.name == spec.name)
            .values(
                health_status="healthy" if healthy else "unhealthy",
                health_detail=detail[:2000],
                health_checked_at=utcnow(),
            )
        )
