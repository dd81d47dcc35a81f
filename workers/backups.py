"""The backups' periodic jobs: the daily backup of every environment's database (and the
control plane's own), the weekly restore drill of each database's newest backup, the
daily retention, and a janitor for what interrupted uploads left. Each creates its runs
through the same functions as the API."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.auth.principal import Principal
from app.auth.roles import Role
from app.backups import operations, retention, service
from app.backups.models import Backup, BackupOrigin, BackupStatus
from app.core.context import AppContext
from app.core.errors import AppError
from app.environments.models import Environment
from workers.state import WorkerState

logger = logging.getLogger(__name__)

DAILY = Principal.system("schedule:daily-backup", Role.OPERATOR)
DRILL = Principal.system("schedule:weekly-backup-drill", Role.OPERATOR)


async def backup_targets(context: AppContext) -> list[str | None]:
    """The environments with a ``database_url``, then ``None`` (the control plane) when
    the settings say so."""
    async with context.sessionmaker() as session:
        names = list(
            await session.scalars(
                select(Environment.name)
                .where(Environment.database_url.is_not(None))
                .order_by(Environment.name)
            )
        )
    targets: list[str | None] = list(names)
    if context.settings.backups.backup_self:
        targets.append(None)
    return targets


async def scheduled_backups(ctx: WorkerState) -> list[str]:
    """One backup run per target, as ``schedule:daily-backup``; returns the run ids."""
    context = ctx["context"]
    created = []
    for environment in await backup_targets(context):
        try:
            async with context.unit_of_work() as uow:
                run, _ = await operations.create_backup(
                    uow, context, DAILY, environment, origin=BackupOrigin.SCHEDULE
                )
            created.append(run.id)
        except AppError as error:
            logger.warning(
                "no scheduled backup of %s: %s", environment or "the control plane", error
            )
    return created


async def newest_backups(context: AppContext) -> list[str]:
    """The newest stored backup of each target (environment and database) that still
    has a database to drill beside (an environment with a ``database_url``, or the
    control plane)."""
    targets = set(await backup_targets(context)) | {None}
    async with context.sessionmaker() as session:
        rows = (
            await session.execute(
                select(Backup.id, Backup.environment, Backup.database)
                .where(Backup.status == BackupStatus.SUCCESS.value)
                .order_by(Backup.created_at.desc(), Backup.id.desc())
            )
        ).all()
    newest: dict[tuple[str | None, str], str] = {}
    for backup_id, environment, database in rows:
        if environment in targets:
            newest.setdefault((environment, database), backup_id)
    return list(newest.values())


async def scheduled_drills(ctx: WorkerState) -> list[str]:
    """A ``backup_verification`` run of each target's newest backup."""
    context = ctx["context"]
    created = []
    for backup_id in await newest_backups(context):
        try:
            async with context.unit_of_work() as uow:
                run = await operations.create_verification(uow, context, DRILL, backup_id)
            created.append(run.id)
        except AppError as error:
            logger.warning("no drill of backup %s: %s", backup_id, error)
    return created


async def backup_retention(ctx: WorkerState) -> dict[str, int]:
    done = await retention.apply(ctx["context"])
    return {
        "deleted": len(done.deleted),
        "kept_newest_verified": len(done.kept_newest_verified),
        "partials_removed": done.partials_removed,
    }


async def backup_janitor(ctx: WorkerState) -> int:
    """Fail the backups whose run ended under them; remove their partial uploads."""
    return await service.clean_partials(ctx["context"])
