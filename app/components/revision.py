"""The public status's revision: bumped in the transaction of every change readers of
the status page can see, read by the public status to know whether its cache is
current (:mod:`app.status`)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.components.models import StatusRevision
from app.core.db import utcnow

_BUMPED = "status_revision_bumped"


async def bump(session: AsyncSession) -> None:
    """Mark the public status changed by the caller's transaction: once per session (a
    unit of work is one session and one transaction). The row lock is held until the
    commit, so a reader never sees the new revision before the change."""
    if session.info.get(_BUMPED):
        return
    await session.execute(
        update(StatusRevision)
        .where(StatusRevision.id == 1)
        .values(revision=StatusRevision.revision + 1, changed_at=utcnow())
    )
    session.info[_BUMPED] = True


async def current(session: AsyncSession) -> int:
    """The committed revision (0 before the first change)."""
    value = await session.scalar(select(StatusRevision.revision).where(StatusRevision.id == 1))
    return int(value or 0)
