"""Maintenance windows: their rules, their lifecycle, and what they mean for the rest of
the system while they last.

Lifecycle: ``scheduled → in_progress → verifying → completed``; a scheduled window may
be ``cancelled``. A window is *in effect* from the moment it starts until its scheduled
end: once started (``in_progress``), or, for a window the scheduler starts, as soon as
its time has come even before the scheduler's next pass (so there is no gap of a
scheduler interval at the start of a freeze). A window started by hand stays in effect
until it is completed by hand. While in effect, a window:

- suppresses alerts for its components (:func:`suppressing`);
- freezes deployments to its environments unless it is a deploy window
  (:func:`check_not_frozen`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError
from app.core.paths import V1
from app.maintenances.models import Maintenance, MaintenanceComponent, MaintenanceEnvironment


class DeployFreeze(AppError):
    """A deployment to an environment frozen by a maintenance window."""

    type = "/problems/deploy-freeze"
    title = "Deployments are frozen"
    status = 409


def in_effect(now: dt.datetime) -> ColumnElement[bool]:
    """The windows in effect at ``now`` (see the module's docstring)."""
    return or_(
        and_(
            Maintenance.status == "in_progress",
            or_(Maintenance.auto_transition == false(), Maintenance.scheduled_until > now),
        ),
        and_(
            Maintenance.status == "scheduled",
            Maintenance.auto_transition == true(),
            Maintenance.scheduled_for <= now,
            Maintenance.scheduled_until > now,
        ),
    )


async def suppressing(
    session: AsyncSession, component_ids: Collection[str], now: dt.datetime
) -> Maintenance | None:
    """A window in effect at ``now`` that covers any of ``component_ids`` (a deploy
    window too: its components are under maintenance all the same); the one ending last
    when several do. None when no window covers them."""
    if not component_ids:
        return None
    covering = exists().where(
        MaintenanceComponent.maintenance_id == Maintenance.id,
        MaintenanceComponent.component_id.in_(sorted(set(component_ids))),
    )
    return await session.scalar(
        select(Maintenance)
        .where(in_effect(now), covering)
        .order_by(Maintenance.scheduled_until.desc(), Maintenance.id)
        .limit(1)
    )


async def freezing(session: AsyncSession, environment: str, now: dt.datetime) -> Maintenance | None:
    """The window (not a deploy window) in effect at ``now`` that freezes
    ``environment``; the one ending last when several do."""
    linked = exists().where(
        MaintenanceEnvironment.maintenance_id == Maintenance.id,
        MaintenanceEnvironment.environment == environment,
    )
    return await session.scalar(
        select(Maintenance)
        .where(in_effect(now), Maintenance.deploy_window == false(), linked)
        .order_by(Maintenance.scheduled_until.desc(), Maintenance.id)
        .limit(1)
    )


async def check_not_frozen(session: AsyncSession, environment: str, now: dt.datetime) -> None:
    """Raise :class:`DeployFreeze`, naming the window, when a window in effect at ``now``
    freezes ``environment``."""
    window = await freezing(session, environment, now)
    if window is None:
        return
    until = _utc(window.scheduled_until).isoformat().replace("+00:00", "Z")
    ends = f"until {until}" if window.auto_transition else "until it is completed"
    raise DeployFreeze(
        f"environment {environment!r} is frozen by maintenance window {window.title!r} "
        f"({window.id}) {ends}; deployments resume when it ends, or in a deploy window",
        extra={
            "maintenance_id": window.id,
            "maintenance_title": window.title,
            "environment": environment,
            "frozen_until": until if window.auto_transition else None,
            "maintenance": f"{V1}/maintenances/{window.id}",
        },
    )


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
