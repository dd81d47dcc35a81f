"""Backups asked for (by the API, the command line or the schedule): a run of kind
``backup`` with its backup row, a run of kind ``backup_verification`` (re-hash, then a
restore drill), listing and reading them. The schedule and the API call the same
functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.backups import service
from app.backups.models import Backup, BackupOrigin, BackupStatus
from app.backups.sources import Source
from app.backups.storage import StorageError
from app.backups.targets import engine_of
from app.core.context import AppContext
from app.core.db import UnitOfWork
from app.core.errors import AppError, NotFound
from app.core.ids import new_id
from app.core.pagination import CursorParams, paginate
from app.core.settings import Settings
from app.environments.models import Environment
from app.environments.service import EnvironmentNotFound
from app.runs import service as run_service
from app.runs.models import Run, RunKind
from app.runs.service import StepSpec

VERIFIABLE = frozenset({BackupStatus.SUCCESS.value, BackupStatus.UNVERIFIABLE.value})


class BackupNotFound(NotFound):
    type = "/problems/backup-not-found"
    title = "Backup not found"


class NoDatabase(AppError):
    type = "/problems/no-database"
    title = "Nothing to back up"
    status = 409


class NotVerifiable(AppError):
    type = "/problems/backup-not-verifiable"
    title = "Only a stored backup can be verified"
    status = 409


@dataclass(frozen=True)
class Target:
    """What a backup of ``environment`` (``None``: the control plane) dumps."""

    environment: str | None
    source: Source
    engine: str


async def resolve(session: AsyncSession, context: AppContext, environment: str | None) -> Target:
    """The target of a backup, or the problem why there is none (404, 409)."""
    row: Environment | None = None
    if environment is not None:
        row = await session.get(Environment, environment)
        if row is None:
            raise EnvironmentNotFound(f"No environment {environment!r}")
    try:
        url = service.database_url(context, row)
        source = service.source_of(context, url)
        engine = engine_of(url)
    except service.BackupError as error:
        raise NoDatabase(str(error)) from None
    return Target(environment, source, engine)


@dataclass(frozen=True)
class Plan:
    environment: str | None
    database: str
    engine: str
    format: str
    object_key: str
    storage_url: str


def plan(context: AppContext, target: Target) -> Plan:
    """Where a backup taken now would go (the key's id is the future run's)."""
    key = service.object_key(
        target.environment, target.source.database, new_id(), target.source.extension
    )
    try:
        url = service.storage(context).object_url(key)
    except StorageError as error:
        raise NoDatabase(f"the backup storage is unusable: {error}") from None
    return Plan(
        target.environment,
        target.source.database,
        target.engine,
        target.source.format,
        key,
        url,
    )


def backup_steps(settings: Settings) -> list[StepSpec]:
    timeout = float(settings.backups.timeout_seconds)
    return [StepSpec("backup", "backup_take", {}, timeout_seconds=timeout)]


async def create_backup(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    environment: str | None,
    *,
    origin: BackupOrigin = BackupOrigin.REQUEST,
) -> tuple[Run, Backup]:
    """A run of kind ``backup`` and its backup row (same id), in the caller's
    transaction, with the audit row ``backup.create``."""
    target = await resolve(uow.session, context, environment)
    run = await run_service.create_run(
        uow,
        context,
        kind=RunKind.BACKUP,
        steps=backup_steps(context.settings),
        params={"environment": environment, "self": environment is None},
        requested_by=principal.actor,
        environment=environment,
    )
    try:
        backup = await service.prepare(
            uow.session,
            context,
            environment=environment,
            run_id=run.id,
            backup_id=run.id,
            origin=origin,
        )
    except service.BackupError as error:
        raise NoDatabase(str(error)) from None
    await audit_service.record(
        uow.session,
        principal,
        action="backup.create",
        resource_type="backup",
        resource_id=backup.id,
        summary={
            "environment": environment,
            "database": target.source.database,
            "origin": origin.value,
            "key": backup.object_key,
        },
    )
    return run, backup


def verification_steps(settings: Settings, backup_id: str) -> list[StepSpec]:
    timeout = float(settings.backups.timeout_seconds)
    ref = {"backup_id": backup_id}
    return [
        StepSpec("checksum", "backup_checksum", ref, timeout_seconds=timeout),
        StepSpec("restore drill", "backup_drill", ref, timeout_seconds=timeout),
    ]


async def create_verification(
    uow: UnitOfWork, context: AppContext, principal: Principal, backup_id: str
) -> Run:
    """A run of kind ``backup_verification`` of a stored backup (409 otherwise)."""
    backup = await uow.session.get(Backup, backup_id, with_for_update=True)
    if backup is None:
        raise BackupNotFound(f"No backup {backup_id!r}")
    if backup.status not in VERIFIABLE:
        raise NotVerifiable(f"Backup {backup_id} is {backup.status}: nothing stored to verify")
    run = await run_service.create_run(
        uow,
        context,
        kind=RunKind.BACKUP_VERIFICATION,
        steps=verification_steps(context.settings, backup.id),
        params={"backup_id": backup.id},
        requested_by=principal.actor,
        environment=backup.environment,
    )
    await audit_service.record(
        uow.session,
        principal,
        action="backup.verify",
        resource_type="backup",
        resource_id=backup.id,
        summary={"run_id": run.id, "key": backup.object_key},
    )
    return run


async def get(session: AsyncSession, backup_id: str) -> Backup:
    backup = await session.scalar(
        select(Backup).where(Backup.id == backup_id).execution_options(populate_existing=True)
    )
    if backup is None:
        raise BackupNotFound(f"No backup {backup_id!r}")
    return backup


@dataclass(frozen=True)
class Filters:
    environment: str | None = None
    database: str | None = None
    status: BackupStatus | None = None
    origin: BackupOrigin | None = None
    verified: bool | None = None
    self_: bool | None = None


async def list_page(
    session: AsyncSession, filters: Filters, page: CursorParams
) -> tuple[Sequence[Backup], str | None]:
    """Newest first."""
    statement = select(Backup)
    if filters.environment is not None:
        statement = statement.where(Backup.environment == filters.environment)
    if filters.database is not None:
        statement = statement.where(Backup.database == filters.database)
    if filters.status is not None:
        statement = statement.where(Backup.status == filters.status.value)
    if filters.origin is not None:
        statement = statement.where(Backup.origin == filters.origin.value)
    if filters.verified is not None:
        verified = Backup.verified_at.is_not(None)
        statement = statement.where(verified if filters.verified else ~verified)
    if filters.self_ is not None:
        own = Backup.environment.is_(None)
        statement = statement.where(own if filters.self_ else ~own)
    return await paginate(session, statement, page, created_at=Backup.created_at, id=Backup.id)
