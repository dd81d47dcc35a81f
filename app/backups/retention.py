"""Deleting backups: by an admin (``DELETE /v1/backups/{id}``) or by the daily
retention, under one guard — the newest verified backup of a target (an environment's
database, or the control plane's own) is never deleted, nor one still being taken."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.auth.roles import Role
from app.backups import service
from app.backups.events import backup_data
from app.backups.models import Backup, BackupStatus, Restore
from app.backups.storage import StorageError
from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.core.errors import AppError
from app.environments.models import Environment
from app.outbox.service import add_event

logger = logging.getLogger(__name__)

RETENTION_ACTOR = Principal.system("schedule:backup-retention", Role.ADMIN)
# What retention deletes when old enough: backups with an object. A failed backup has
# none (its partial upload is cleaned by service.clean_partials) and stays as history.
STORED = (BackupStatus.SUCCESS.value, BackupStatus.UNVERIFIABLE.value)


class NewestVerifiedBackup(AppError):
    type = "/problems/newest-verified-backup"
    title = "The newest verified backup of its database is kept"
    status = 409


class BackupInProgress(AppError):
    type = "/problems/backup-in-progress"
    title = "The backup is still being taken"
    status = 409


class BackupInUse(AppError):
    type = "/problems/backup-in-use"
    title = "An active restore is writing the backup back"
    status = 409


class StorageUnavailable(AppError):
    type = "/problems/backup-storage-unavailable"
    title = "The backup storage refused the deletion"
    status = 503


async def newest_verified_id(
    session: AsyncSession, environment: str | None, database: str
) -> str | None:
    """The id of the newest verified, stored backup of a target."""
    target = (
        Backup.environment.is_(None) if environment is None else Backup.environment == environment
    )
    return await session.scalar(
        select(Backup.id)
        .where(
            target,
            Backup.database == database,
            Backup.status == BackupStatus.SUCCESS.value,
            Backup.verified_at.is_not(None),
        )
        .order_by(Backup.created_at.desc(), Backup.id.desc())
        .limit(1)
    )


async def delete(
    uow: UnitOfWork, context: AppContext, backup: Backup, actor: Principal, *, reason: str
) -> bool:
    """Delete ``backup``'s object and mark it ``deleted`` (event and audit row in the same
    transaction). ``backup`` is locked by the caller. Returns False when it was deleted
    already; raises when the guard refuses it."""
    if backup.status == BackupStatus.DELETED.value:
        return False
    if backup.status == BackupStatus.IN_PROGRESS.value:
        raise BackupInProgress(f"Backup {backup.id} is still being taken")
    restoring = await uow.session.scalar(
        select(Restore.id).where(Restore.backup_id == backup.id, Restore.active).limit(1)
    )
    if restoring is not None:
        raise BackupInUse(f"Restore {restoring} of backup {backup.id} is still active")
    if backup.id == await newest_verified_id(uow.session, backup.environment, backup.database):
        raise NewestVerifiedBackup(
            f"Backup {backup.id} is the newest verified backup of "
            f"{backup.environment or 'the control plane'}/{backup.database}; take and verify "
            "a newer one first"
        )
    try:
        await service.storage(context).delete(backup.object_key)
    except StorageError as error:
        raise StorageUnavailable(str(error)) from None
    status_before = backup.status
    backup.status = BackupStatus.DELETED.value
    backup.deleted_at = utcnow()
    backup.deleted_by = actor.actor
    await uow.session.flush()
    await add_event(uow.session, "backup.deleted", backup_data(backup))
    await audit_service.record(
        uow.session,
        actor,
        action="backup.delete",
        resource_type="backup",
        resource_id=backup.id,
        summary={
            "key": backup.object_key,
            "status_before": status_before,
            "created_at": backup.created_at.isoformat(),
            "reason": reason,
        },
    )
    return True


async def delete_by_id(
    uow: UnitOfWork, context: AppContext, backup_id: str, actor: Principal
) -> Backup | None:
    """An admin's deletion; ``None`` when there is no such backup."""
    backup = await uow.session.get(Backup, backup_id, with_for_update=True)
    if backup is None:
        return None
    await delete(uow, context, backup, actor, reason="requested")
    return backup


@dataclass
class Retained:
    deleted: list[str] = field(default_factory=list)
    kept_newest_verified: list[str] = field(default_factory=list)
    partials_removed: int = 0


async def apply(context: AppContext, *, now: dt.datetime | None = None) -> Retained:
    """Delete the backups older than their environment's ``backup_retention_days`` (or
    the setting), except the newest verified one of each target; then remove what failed
    backups left in the storage. ``now``: the clock (tests pass their own)."""
    moment = now or utcnow()
    default_days = context.settings.backups.retention_days
    done = Retained()
    async with context.sessionmaker() as session:
        days = {
            name: value
            for name, value in await session.execute(
                select(Environment.name, Environment.backup_retention_days)
            )
        }
        candidates = (
            await session.execute(
                select(Backup.id, Backup.environment, Backup.created_at)
                .where(Backup.status.in_(STORED))
                .order_by(Backup.created_at, Backup.id)
            )
        ).all()
    for backup_id, environment, created_at in candidates:
        keep = days.get(environment) if environment is not None else None
        cutoff = moment - dt.timedelta(days=keep or default_days)
        if created_at >= cutoff:
            continue
        try:
            async with context.unit_of_work() as uow:
                row = await uow.session.get(Backup, backup_id, with_for_update=True)
                if row is None or row.status not in STORED:
                    continue
                age = (moment - row.created_at).days
                if await delete(uow, context, row, RETENTION_ACTOR, reason=f"{age} days old"):
                    done.deleted.append(backup_id)
        except NewestVerifiedBackup:
            done.kept_newest_verified.append(backup_id)
        except BackupInUse:
            continue
        except StorageUnavailable as error:
            logger.warning("retention could not delete backup %s: %s", backup_id, error)
    done.partials_removed = await service.clean_partials(context)
    if done.deleted:
        logger.info("retention deleted %d backups", len(done.deleted))
    return done
