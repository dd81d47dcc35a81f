"""The steps of a restore (the runbook's "restore from backup"), each a registered
action that writes an audit row of how it ended (system actor ``restore``, action
``restore.step``):

1. ``restore_check``: re-hash the stored object; a changed byte stops the restore.
2. ``restore_safety_backup``: a fresh backup of the target first; if it fails, stop.
3. ``restore_stop_services``: stop the environment's application services (through
   their driver), recording which ran and were stopped.
4. ``restore_database``: load the backup into a scratch database beside the target,
   compare row counts, run the smoke queries, and only then replace the target.
5. ``restore_start_services``: start again what step 3 stopped (also the run's
   ``rollback`` step: it runs whenever the run stops after step 3).
6. ``restore_verify_health``: each service healthy again.

Until step 4 replaces it, the target database is never written.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import Field
from sqlalchemy import select

from app.audit import service as audit_service
from app.audit.models import Outcome
from app.backups import pipeline
from app.backups import service as backup_service
from app.backups.models import Backup, BackupOrigin, BackupStatus, Restore
from app.backups.restores import ACTOR
from app.backups.sources import SourceError
from app.backups.storage import StorageError
from app.backups.stream import CorruptError
from app.core.redaction import redact_text
from app.drivers.base import Driver, DriverError, ServiceSpec
from app.environments.engines import driver_for
from app.environments.models import Environment, Service
from app.runs.actions import Params, StepContext, StepOutcome
from app.runs.engine import DATABASE_DOWN, LeaseLost
from app.runs.models import RunStatus, Step, StepStatus

logger = logging.getLogger(__name__)

P = TypeVar("P", bound=Params)
Handler = Callable[[P, StepContext], Awaitable[StepOutcome]]
EXPECTED = (SourceError, StorageError, CorruptError, pipeline.ReadBackMismatch)


def _failure(message: str, data: dict[str, Any] | None = None) -> StepOutcome:
    return StepOutcome(StepStatus.FAILURE, message, data=data or {}, error=message)


def audited(action: str) -> Callable[[Handler[P]], Handler[P]]:
    """Every step of a restore leaves an audit row saying how it ended (an unexpected
    error of the step is its failure, audited too)."""

    def wrap(handler: Handler[P]) -> Handler[P]:
        @functools.wraps(handler)
        async def run(params: P, ctx: StepContext) -> StepOutcome:
            try:
                outcome = await handler(params, ctx)
            except (LeaseLost, *DATABASE_DOWN):
                raise
            except Exception as exc:
                logger.exception("restore step %s raised", action)
                outcome = _failure(f"{type(exc).__name__}: {exc}"[:2000])
            await _audit(ctx, action, outcome)
            return outcome

        return run

    return wrap


async def _audit(ctx: StepContext, action: str, outcome: StepOutcome) -> None:
    failed = outcome.status == StepStatus.FAILURE
    async with ctx.context.unit_of_work() as uow:
        await audit_service.record(
            uow.session,
            ACTOR,
            action="restore.step",
            outcome=Outcome.FAILED if failed else Outcome.SUCCESS,
            resource_type="restore",
            resource_id=ctx.run_id,
            summary={
                "step": action,
                "outcome": outcome.status.value,
                "error": redact_text(outcome.error)[:500] if outcome.error else None,
            },
        )


# -- 1. the backup's bytes ---------------------------------------------------------------


class BackupParams(Params):
    backup_id: str


async def _backup(ctx: StepContext, backup_id: str) -> Backup:
    async with ctx.context.sessionmaker() as session:
        backup = await session.get(Backup, backup_id)
    if backup is None:
        raise backup_service.BackupError(f"no backup {backup_id!r}")
    return backup


@audited("restore_check")
async def check(params: BackupParams, ctx: StepContext) -> StepOutcome:
    """The stored object is still what was stored (size and SHA-256)."""
    async with ctx.context.unit_of_work() as uow:
        restore = await uow.session.get(Restore, ctx.run_id, with_for_update=True)
        if restore is not None and restore.active:
            restore.status = RunStatus.IN_PROGRESS.value
    backup = await _backup(ctx, params.backup_id)
    if backup.size_bytes is None or backup.sha256 is None:
        return _failure(f"backup {backup.id} has no recorded size and SHA-256")
    where = backup_service.storage(ctx.context)
    if where.object_url(backup.object_key) != backup.storage_url:
        return _failure(
            f"backup {backup.id} is stored at {backup.storage_url}, not in the configured "
            f"storage ({where.url}); the target was not touched"
        )
    await ctx.log(f"re-hashing {backup.storage_url}")
    try:
        checked = await pipeline.verify_object(
            where, backup.object_key, backup.size_bytes, backup.sha256
        )
    except EXPECTED as error:
        return _failure(f"{error}; the target was not touched", {"backup_id": backup.id})
    return StepOutcome(
        StepStatus.SUCCESS,
        f"{checked.size} bytes, SHA-256 {checked.sha256}: as stored",
        data={"backup_id": backup.id, "size_bytes": checked.size, "sha256": checked.sha256},
    )


# -- 2. the safety backup ------------------------------------------------------------------


class EnvironmentParams(Params):
    environment: str


@audited("restore_safety_backup")
async def safety_backup(params: EnvironmentParams, ctx: StepContext) -> StepOutcome:
    """A fresh backup of the target, taken (stored and read back) before anything else
    changes; the restore stops if it fails."""
    context = ctx.context
    try:
        async with context.unit_of_work() as uow:
            backup = await backup_service.prepare(
                uow.session,
                context,
                environment=params.environment,
                run_id=ctx.run_id,
                origin=BackupOrigin.RESTORE,
            )
            restore = await uow.session.get(Restore, ctx.run_id, with_for_update=True)
            if restore is not None:
                restore.pre_restore_backup_id = backup.id
            backup_id = backup.id
    except backup_service.BackupError as error:
        return _failure(f"the safety backup cannot be taken: {error}; the target was not touched")
    done = await backup_service.perform(context, backup_id, ctx.log)
    data = {"backup_id": backup_id, "status": done.status}
    if done.status != BackupStatus.SUCCESS:
        return _failure(
            f"the safety backup {backup_id} failed: {done.error or done.status}; "
            "the target was not touched",
            data,
        )
    return StepOutcome(
        StepStatus.SUCCESS,
        f"safety backup {backup_id}: {done.size_bytes} bytes stored and read back "
        f"({done.storage_url})",
        data={**data, "size_bytes": done.size_bytes, "sha256": done.sha256},
    )


# -- 3. stop / 5. start the services ---------------------------------------------------------


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


class ServicesParams(Params):
    environment: str
    services: list[ServiceParams] = Field(default_factory=list)


async def _driver(ctx: StepContext, spec: ServiceSpec) -> Driver:
    return await driver_for(ctx.context, spec)


@audited("restore_stop_services")
async def stop_services(params: ServicesParams, ctx: StepContext) -> StepOutcome:
    """Stop what runs of the environment's services (the runbook: "stop application
    services"), in reverse deploy order; a service that does not run is left alone."""
    stopped: list[dict[str, str]] = []
    not_running: list[str] = []
    lines: list[str] = []
    for service in params.services:
        spec = service.spec()
        try:
            driver = await _driver(ctx, spec)
            running = await driver.current(spec)
            if running is None:
                not_running.append(spec.name)
                lines.append(f"{spec.name}: not running")
                continue
            await driver.stop(spec, ctx.log)
        except (DriverError, NotImplementedError) as error:
            data = {"stopped": stopped, "not_running": not_running, "failed": spec.name}
            return _failure(f"{spec.name} could not be stopped: {error}", data)
        stopped.append({"name": spec.name, "version": running.version})
        lines.append(f"{spec.name}: stopped ({running.version})")
    summary = (
        f"stopped {', '.join(s['name'] for s in stopped)}" if stopped else "no service was running"
    )
    return StepOutcome(
        StepStatus.SUCCESS,
        "\n".join([summary, *lines]),
        data={"stopped": stopped, "not_running": not_running},
    )


async def _stopped(ctx: StepContext, params: ServicesParams) -> list[dict[str, str]] | None:
    """What step 3 stopped (``None``: it never started). When its worker died while it
    ran, the services that do not run now and ran a known version before."""
    async with ctx.context.sessionmaker() as session:
        step = await session.scalar(
            select(Step).where(Step.run_id == ctx.run_id, Step.action == "restore_stop_services")
        )
        known = {
            s.name: s.current_version
            for s in await session.scalars(
                select(Service).where(Service.environment == params.environment)
            )
        }
    not_run = (StepStatus.PENDING, StepStatus.SKIPPED, StepStatus.CANCELLED)
    if step is None or step.status in not_run:
        return None
    result = step.result or {}
    if "stopped" in result:
        return list(result["stopped"])
    stopped = []  # interrupted: what it may have stopped
    for service in params.services:
        version = known.get(service.name)
        spec = service.spec()
        if version and await (await _driver(ctx, spec)).current(spec) is None:
            stopped.append({"name": service.name, "version": version})
    return stopped


@audited("restore_start_services")
async def start_services(params: ServicesParams, ctx: StepContext) -> StepOutcome:
    """Start again, in deploy order, each service step 3 stopped (the version it ran);
    one that runs already is left alone. Safe to run twice."""
    stopped = await _stopped(ctx, params)
    if not stopped:
        reason = "no service was stopped" if stopped is not None else "nothing was stopped yet"
        return StepOutcome(StepStatus.SKIPPED, reason, data={"started": []})
    versions = {s["name"]: s["version"] for s in stopped}
    started: list[str] = []
    failed: dict[str, str] = {}
    lines: list[str] = []
    for service in params.services:
        if service.name not in versions:
            continue
        spec = service.spec()
        try:
            driver = await _driver(ctx, spec)
            if await driver.current(spec) is not None:
                lines.append(f"{spec.name}: runs already")
                continue
            await driver.deploy(spec, versions[spec.name], ctx.log)
        except (DriverError, NotImplementedError) as error:
            failed[spec.name] = str(error)
            lines.append(f"{spec.name}: not started: {error}")
            continue
        started.append(spec.name)
        lines.append(f"{spec.name}: started ({versions[spec.name]})")
    data: dict[str, Any] = {"started": started, "failed": failed}
    if failed:
        names = ", ".join(failed)
        return _failure(f"not started again: {names} ({'; '.join(failed.values())})", data)
    summary = f"started {', '.join(started)}" if started else "every stopped service runs"
    return StepOutcome(StepStatus.SUCCESS, "\n".join([summary, *lines]), data=data)


# -- 4. the restore ----------------------------------------------------------------------------


@audited("restore_database")
async def restore_database(params: BackupParams, ctx: StepContext) -> StepOutcome:
    """Load the backup beside the target, check it, and only then replace the target
    (row counts as recorded, smoke queries passing, bytes as stored)."""
    context = ctx.context
    backup = await _backup(ctx, params.backup_id)
    if backup.size_bytes is None or backup.sha256 is None or backup.environment is None:
        return _failure(f"backup {backup.id} cannot be restored; the target was not touched")
    async with context.sessionmaker() as session:
        environment = await session.get(Environment, backup.environment)
    if environment is None or not environment.database_url:
        return _failure(
            f"environment {backup.environment!r} has no database to restore into; "
            "the target was not touched"
        )
    try:
        source = backup_service.source_of(context, environment.database_url)
    except backup_service.BackupError as error:
        return _failure(f"{error}; the target was not touched")
    where = backup_service.storage(context)
    try:
        drilled = await pipeline.drill(
            source,
            where,
            backup.object_key,
            size=backup.size_bytes,
            sha256=backup.sha256,
            row_counts=dict(backup.row_counts or {}),
            smoke_queries=list(environment.backup_smoke_queries or []),
            log=ctx.log,
            promote=True,
        )
    except EXPECTED as error:
        return _failure(f"{error}; the target was not touched")
    seconds = round(drilled.restore_seconds, 3)
    data: dict[str, Any] = {
        "restore_seconds": seconds,
        "row_counts": drilled.row_counts,
        "mismatches": drilled.mismatches,
        "smoke": drilled.smoke,
    }
    if not drilled.passed:
        problems = [
            f"{table}: {m['restored']} rows restored, {m['expected']} recorded"
            for table, m in drilled.mismatches.items()
        ] + [f"smoke query failed: {s.get('error')}" for s in drilled.smoke if not s.get("ok")]
        return _failure(
            "the restored copy does not match the backup (" + "; ".join(problems) + "); "
            "the target was not touched",
            data,
        )
    async with context.unit_of_work() as uow:
        restore = await uow.session.get(Restore, ctx.run_id, with_for_update=True)
        if restore is not None:
            restore.restore_seconds = seconds
    return StepOutcome(
        StepStatus.SUCCESS,
        f"{backup.database} restored from backup {backup.id} in {seconds:g} s "
        f"({len(drilled.row_counts)} tables counted, {len(drilled.smoke)} smoke queries)",
        data=data,
    )


# -- 6. health ---------------------------------------------------------------------------------


@audited("restore_verify_health")
async def verify_health(params: ServicesParams, ctx: StepContext) -> StepOutcome:
    """Each service that ran before the restore is healthy (its driver's probe of its
    health URL; without one, it runs)."""
    stopped = await _stopped(ctx, params) or []
    ran = {s["name"] for s in stopped}
    unhealthy: dict[str, str] = {}
    lines: list[str] = []
    checked: dict[str, bool] = {}
    for service in params.services:
        spec = service.spec()
        driver = await _driver(ctx, spec)
        try:
            running = await driver.current(spec)
            if running is None and spec.name not in ran:
                lines.append(f"{spec.name}: not running (it did not run before the restore)")
                continue
            if spec.health_url is None:
                healthy, detail = running is not None, "runs" if running else "not running"
            else:
                health = await asyncio.wait_for(
                    driver.health(spec), timeout=spec.health_timeout_seconds + 5
                )
                healthy, detail = health.healthy, health.detail
        except (DriverError, NotImplementedError, TimeoutError) as error:
            healthy, detail = False, str(error) or type(error).__name__
        checked[spec.name] = healthy
        lines.append(f"{spec.name}: {'healthy' if healthy else 'unhealthy'} {detail}".rstrip())
        if not healthy:
            unhealthy[spec.name] = detail
    data = {"healthy": checked}
    if unhealthy:
        names = ", ".join(f"{n} ({d})" for n, d in unhealthy.items())
        return _failure(f"unhealthy after the restore: {names}", data)
    summary = f"healthy: {', '.join(checked)}" if checked else "no service to check"
    return StepOutcome(StepStatus.SUCCESS, "\n".join([summary, *lines]), data=data)
