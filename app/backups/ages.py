"""How old each database's newest backups are (the health check grades them)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.backups.models import Backup, BackupStatus
from app.environments.models import Environment

SELF_TARGET = "control plane"


@dataclass(frozen=True)
class Age:
    target: str  # the environment's name, or SELF_TARGET
    newest_id: str | None
    newest_at: dt.datetime | None  # when the newest successful backup finished
    verified_id: str | None
    verified_at: dt.datetime | None  # when the newest verified backup finished


async def _newest(
    session: AsyncSession, environment: str | None, *, verified: bool
) -> tuple[str | None, dt.datetime | None]:
    query = select(Backup.id, Backup.finished_at).where(
        Backup.status == BackupStatus.SUCCESS.value,
        Backup.environment == environment
        if environment is not None
        else Backup.environment.is_(None),
    )
    if verified:
        query = query.where(Backup.verified_at.is_not(None))
    row = (await session.execute(query.order_by(Backup.finished_at.desc()).limit(1))).first()
    return (row[0], row[1]) if row else (None, None)


async def backup_ages(session: AsyncSession, include_self: bool) -> list[Age]:
    """Every environment with a ``database_url`` (by name), then the control plane's
    own database when ``include_self``."""
    names = list(
        await session.scalars(
            select(Environment.name)
            .where(Environment.database_url.is_not(None))
            .order_by(Environment.name)
        )
    )
    targets: list[tuple[str, str | None]] = [(name, name) for name in names]
    if include_self:
        targets.append((SELF_TARGET, None))
    ages = []
    for label, environment in targets:
        newest_id, newest_at = await _newest(session, environment, verified=False)
        verified_id, verified_at = await _newest(session, environment, verified=True)
        ages.append(Age(label, newest_id, newest_at, verified_id, verified_at))
    return ages
