"""Backups as rows and stored objects: where a target's backup goes (:func:`prepare`),
taking it (:func:`perform`), what a dead worker left (:func:`settle_interrupted`,
:func:`clean_partials`).

Every change of a backup's status is written with its event and its audit row in one
transaction. The streaming work is :mod:`app.backups.pipeline`; this module keeps the
rows true to it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.auth.roles import Role
from app.backups import pipeline
from app.backups.events import backup_data
from app.backups.models import Backup, BackupOrigin, BackupStatus
from app.backups.sources import LogLine, Source, SourceError
from app.backups.storage import Storage, StorageError
from app.backups.stream import CorruptError
from app.backups.targets import engine_of, open_storage, source_for
from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.core.ids import new_id
from app.core.redaction import redact_text
from app.environments.models import Environment
from app.outbox.service import add_event
from app.runs.models import TERMINAL_STATUSES, Run

logger = logging.getLogger(__name__)

SELF = "_self"  # the key prefix of the control plane's own backups
PARTIAL_GRACE = dt.timedelta(hours=1)  # an unknown partial upload older than this is litter
ACTOR = Principal.system("backups", Role.OPERATOR)
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# What a failed backup's error may say: these are ours and carry no secret beyond what
# redaction removes.
EXPECTED_ERRORS = (SourceError, StorageError, CorruptError, pipeline.ReadBackMismatch)


class BackupError(Exception):
    """A backup cannot be taken as asked (the message is safe to show)."""


class _NotOurs(Exception):
    """Another :func:`perform` holds the backup, or it ended: this one stops."""


def storage(context: AppContext) -> Storage:
    settings = context.settings
    return open_storage(
        settings.storage_url_value,
        s3_endpoint_url=settings.s3_endpoint_url,
        part_size=settings.backups.part_size_mb << 20,
    )


def database_url(context: AppContext, environment: Environment | None) -> str:
    """The URL of the database a backup of ``environment`` dumps (``None``: the control
    plane's own)."""
    if environment is None:
        return context.settings.self_database_url
    if not environment.database_url:
        raise BackupError(
            f"environment {environment.name!r} has no database_url: nothing to back up"
        )
    return environment.database_url


def source_of(context: AppContext, url: str) -> Source:
    backups = context.settings.backups
    try:
        return source_for(
            url, pg_format=backups.postgres_format, largest_tables=backups.largest_tables
        )
    except SourceError as error:
        raise BackupError(str(error)) from None


async def target_environment(session: AsyncSession, name: str | None) -> Environment | None:
    if name is None:
        return None
    environment = await session.get(Environment, name)
    if environment is None:
        raise BackupError(f"no environment {name!r}")
    return environment


def object_key(environment: str | None, database: str, backup_id: str, extension: str) -> str:
    """``<environment>/<database>/<UTC timestamp>_<backup id><extension>`` (a backup
    run's backup has the run's id)."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    safe_database = _KEY_UNSAFE.sub("_", database).strip("._") or "database"
    return f"{environment or SELF}/{safe_database}/{stamp}_{backup_id}{extension}"


async def prepare(
    session: AsyncSession,
    context: AppContext,
    *,
    environment: str | None,
    run_id: str,
    origin: BackupOrigin,
    backup_id: str | None = None,
) -> Backup:
    """The row of a backup about to be taken (``in_progress``; nothing stored yet), in
    the caller's transaction. Raises :class:`BackupError`."""
    target = await target_environment(session, environment)
    url = database_url(context, target)
    source = source_of(context, url)
    backup_id = backup_id or new_id()
    key = object_key(environment, source.database, backup_id, source.extension)
    try:
        location = storage(context).object_url(key)
    except StorageError as error:
        raise BackupError(str(error)) from None
    backup = Backup(
        run_id=run_id,
        origin=origin.value,
        environment=environment,
        database=source.database,
        engine=engine_of(url),
        format=source.format,
        status=BackupStatus.IN_PROGRESS.value,
        storage_url=location,
        object_key=key,
        row_counts={},
        created_at=utcnow(),
    )
    backup.id = backup_id
    session.add(backup)
    await session.flush()
    return backup


async def _load(context: AppContext, backup_id: str) -> tuple[Backup, Source]:
    async with context.unit_of_work() as uow:
        backup = await uow.session.get(Backup, backup_id)
        if backup is None:
            raise BackupError(f"no backup {backup_id!r}")
        target = await target_environment(uow.session, backup.environment)
        return backup, source_of(context, database_url(context, target))


async def perform(context: AppContext, backup_id: str, log: LogLine) -> Backup:
    """Take the backup ``prepare`` described: dump, store, read back. Returns the row as
    it ended (``success`` or ``failure``); raises only when the database is unreachable
    (the run engine then retries or fails the step).

    Only an ``in_progress`` backup is taken, and by one call at a time: the first to
    record its upload holds it; another call (or one on a backup that already ended)
    returns the row as it is. A backup failed while it ran (:func:`supersede`) stays
    failed and its object is deleted. A step taking a backup again after its worker died
    calls :func:`supersede` and prepares a new one."""
    try:
        backup, source = await _load(context, backup_id)
        where = storage(context)
    except (BackupError, StorageError) as error:
        return await _fail(context, backup_id, str(error))
    if backup.status != BackupStatus.IN_PROGRESS.value:
        await log(f"backup {backup_id} is already {backup.status}: nothing to take")
        return backup
    claimed: list[str] = []

    async def started(upload_id: str) -> None:
        async with context.unit_of_work() as uow:
            row = await uow.session.get(Backup, backup_id, with_for_update=True)
            if row is None or row.status != BackupStatus.IN_PROGRESS.value:
                raise _NotOurs(f"backup {backup_id} is no longer in progress")
            if row.upload_id is not None:
                raise _NotOurs(f"backup {backup_id} is already being taken")
            row.upload_id = upload_id
            claimed.append(upload_id)

    await log(f"backing up {backup.database} to {backup.storage_url}")
    try:
        taken = await pipeline.take(source, where, backup.object_key, log, started)
    except _NotOurs as error:
        await log(f"{error}: left to the run that holds it")
        return await _current(context, backup_id)
    except EXPECTED_ERRORS as error:
        return await _fail(context, backup_id, str(error), pipeline.removed(error))
    except asyncio.CancelledError as error:
        reason = "cancelled while it ran"
        await asyncio.shield(_fail(context, backup_id, reason, pipeline.removed(error)))
        raise
    except Exception as error:  # a library's unexpected error still ends the backup
        logger.exception("backup %s failed unexpectedly", backup_id)
        reason = f"{type(error).__name__}: {error}"
        return await _fail(context, backup_id, reason, pipeline.removed(error))
    async with context.unit_of_work() as uow:
        row = await uow.session.get(Backup, backup_id, with_for_update=True)
        assert row is not None
        superseded = row.status != BackupStatus.IN_PROGRESS.value or row.upload_id not in claimed
        if not superseded:
            row.status = BackupStatus.SUCCESS.value
            row.upload_id = None
            row.size_bytes = taken.size
            row.sha256 = taken.sha256
            row.row_counts = taken.row_counts
            row.duration_seconds = round(taken.duration_seconds, 3)
            row.finished_at = utcnow()
            await add_event(uow.session, "backup.succeeded", backup_data(row))
            await audit_service.record(
                uow.session,
                ACTOR,
                action="backup.succeeded",
                resource_type="backup",
                resource_id=row.id,
                summary={"size_bytes": taken.size, "sha256": taken.sha256, "key": row.object_key},
            )
    if superseded:
        # It was failed while it ran (its worker looked dead): nothing of it is kept.
        await log(f"backup {backup_id} ended {row.status} while it ran: its object is deleted")
        try:
            await where.delete(backup.object_key)
        except StorageError as error:
            logger.warning("could not delete the object of backup %s: %s", backup_id, error)
            return row
        async with context.unit_of_work() as uow:
            current = await uow.session.get(Backup, backup_id, with_for_update=True)
            assert current is not None
            if current.upload_id in claimed:
                current.upload_id = None
            return current
    await log(f"backup {backup_id}: {taken.size} bytes stored and read back")
    return row


async def _fail(
    context: AppContext, backup_id: str, reason: str, upload_removed: bool = False
) -> Backup:
    async with context.unit_of_work() as uow:
        row = await uow.session.get(Backup, backup_id, with_for_update=True)
        if row is None:
            raise BackupError(f"no backup {backup_id!r}")
        await mark_failed(uow.session, row, reason)
        if upload_removed:
            row.upload_id = None
        return row


async def _current(context: AppContext, backup_id: str) -> Backup:
    async with context.unit_of_work() as uow:
        row = await uow.session.get(Backup, backup_id)
        if row is None:
            raise BackupError(f"no backup {backup_id!r}")
        return row


async def mark_failed(session: AsyncSession, backup: Backup, reason: str) -> None:
    """``backup`` (locked by the caller) failed: its status, event and audit row. Its
    ``upload_id`` stays for :func:`clean_partials` when the upload was not aborted."""
    if backup.status != BackupStatus.IN_PROGRESS.value:
        return
    backup.status = BackupStatus.FAILURE.value
    backup.error = redact_text(reason)[:2000]
    backup.finished_at = utcnow()
    await add_event(session, "backup.failed", backup_data(backup))
    await audit_service.record(
        session,
        ACTOR,
        action="backup.failed",
        resource_type="backup",
        resource_id=backup.id,
        summary={"error": backup.error, "key": backup.object_key},
    )


async def settle_interrupted(uow: UnitOfWork, context: AppContext, run: Run) -> None:
    """The backups ``run`` left ``in_progress`` (its worker died or it was cancelled)
    failed; their partial uploads are left to :func:`clean_partials`."""
    rows = await uow.session.scalars(
        select(Backup)
        .where(Backup.run_id == run.id, Backup.status == BackupStatus.IN_PROGRESS.value)
        .with_for_update()
    )
    for backup in rows:
        await mark_failed(uow.session, backup, f"the run ended {run.status} while it ran")


async def supersede(context: AppContext, run_id: str) -> None:
    """A step about to take a backup again for ``run_id`` (its previous worker died):
    the backups that worker left ``in_progress`` failed."""
    async with context.unit_of_work() as uow:
        rows = await uow.session.scalars(
            select(Backup)
            .where(Backup.run_id == run_id, Backup.status == BackupStatus.IN_PROGRESS.value)
            .with_for_update()
        )
        for backup in rows:
            await mark_failed(uow.session, backup, "its worker stopped; the step took another")


async def clean_partials(context: AppContext) -> int:
    """Remove what interrupted backups left in the storage: the partial upload of every
    failed backup, backups still ``in_progress`` whose run has ended (marked failed
    first), and unknown partial uploads older than :data:`PARTIAL_GRACE`. Returns how
    many uploads were removed."""
    async with context.unit_of_work() as uow:
        orphaned = (
            await uow.session.scalars(
                select(Backup)
                .join(Run, Run.id == Backup.run_id)
                .where(
                    Backup.status == BackupStatus.IN_PROGRESS.value,
                    Run.status.in_([s.value for s in TERMINAL_STATUSES]),
                )
                .with_for_update(of=Backup)
            )
        ).all()
        for backup in orphaned:
            await mark_failed(uow.session, backup, "its run ended while it ran")
    async with context.unit_of_work() as uow:
        leftovers = (
            await uow.session.execute(
                select(Backup.id, Backup.object_key, Backup.upload_id).where(
                    Backup.status != BackupStatus.IN_PROGRESS.value,
                    Backup.upload_id.is_not(None),
                )
            )
        ).all()
        active = set(
            (
                await uow.session.scalars(
                    select(Backup.upload_id).where(
                        Backup.status == BackupStatus.IN_PROGRESS.value,
                        Backup.upload_id.is_not(None),
                    )
                )
            ).all()
        )
    where = storage(context)
    removed = 0
    for backup_id, key, upload_id in leftovers:
        if upload_id is None:
            continue
        try:
            await where.abort_partial(key, upload_id)
        except StorageError as error:
            logger.warning("could not remove the partial upload of backup %s: %s", backup_id, error)
            continue
        async with context.unit_of_work() as uow:
            row = await uow.session.get(Backup, backup_id, with_for_update=True)
            if row is not None and row.upload_id == upload_id:
                row.upload_id = None
        removed += 1
    for partial in await where.partials(PARTIAL_GRACE):
        if partial.upload_id in active:
            continue
        try:
            await where.abort_partial(partial.key, partial.upload_id)
            removed += 1
        except StorageError as error:
            logger.warning("could not remove partial upload %s: %s", partial.key, error)
    return removed
