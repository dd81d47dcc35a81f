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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    and_,
    delete,
    exists,
    false,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.auth.roles import Role
from app.components import claims, revision
from app.components.models import Component
from app.core.context import AppContext
from app.core.db import UnitOfWork, insert_rows, utcnow
from app.core.errors import AppError, NotFound, PreconditionFailed, ValidationFailed
from app.core.ids import new_id
from app.core.pagination import CursorParams, paginate
from app.core.paths import V1
from app.environments.models import Environment, Service
from app.maintenances.events import (
    MaintenanceChanged,
)
from app.maintenances.models import (
    Maintenance,
    MaintenanceComponent,
    MaintenanceEnvironment,
    MaintenanceUpdate,
)
from app.maintenances.schemas import MaintenanceChange, MaintenanceCreate, MaintenanceUpdateCreate
from app.outbox.service import add_event


class DeployFreeze(AppError):
    """A deployment to an environment frozen by a maintenance window."""

    type = "/problems/deploy-freeze"
    title = "Deployments are frozen"
    status = 409


def in_effect(now: dt.datetime | ColumnElement[dt.datetime]) -> ColumnElement[bool]:
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


async def covering(
    session: AsyncSession, component_ids: Collection[str], now: dt.datetime
) -> dict[str, Maintenance]:
    """Each of ``component_ids`` that a window in effect at ``now`` covers → that window
    (the one ending last when several do); the others are left out."""
    if not component_ids:
        return {}
    rows = await session.execute(
        select(MaintenanceComponent.component_id, Maintenance)
        .join(Maintenance, Maintenance.id == MaintenanceComponent.maintenance_id)
        .where(in_effect(now), MaintenanceComponent.component_id.in_(sorted(set(component_ids))))
        .order_by(Maintenance.scheduled_until.desc(), Maintenance.id)
    )
    found: dict[str, Maintenance] = {}
    for component_id, window in rows.all():
        found.setdefault(component_id, window)
    return found


_Row = TypeVar("_Row", bound=Any)


def freezing_window_id(
    environment: str | ColumnElement[str], now: dt.datetime | ColumnElement[dt.datetime]
) -> ScalarSelect[str]:
    """The id of :func:`freezing`'s window as a scalar subquery (NULL when none), for a
    statement that reads it with other things."""
    return _freezing(select(Maintenance.id), environment, now).scalar_subquery()


def _freezing(
    statement: Select[_Row],
    environment: str | ColumnElement[str],
    now: dt.datetime | ColumnElement[dt.datetime],
) -> Select[_Row]:
    linked = exists().where(
        MaintenanceEnvironment.maintenance_id == Maintenance.id,
        MaintenanceEnvironment.environment == environment,
    )
    return (
        statement.where(in_effect(now), Maintenance.deploy_window == false(), linked)
        .order_by(Maintenance.scheduled_until.desc(), Maintenance.id)
        .limit(1)
    )


async def freezing(session: AsyncSession, environment: str, now: dt.datetime) -> Maintenance | None:
    """The window (not a deploy window) in effect at ``now`` that freezes
    ``environment``; the one ending last when several do."""
    return await session.scalar(_freezing(select(Maintenance), environment, now))


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


# -- errors ------------------------------------------------------------------------------


class MaintenanceNotFound(NotFound):
    type = "/problems/maintenance-not-found"
    title = "Maintenance window not found"


class IllegalTransition(AppError):
    """A change the window's status does not allow (starting a completed window, moving
    the start of a started one)."""

    type = "/problems/maintenance-transition"
    title = "Not allowed in the window's status"
    status = 409


class InvalidWindow(ValidationFailed):
    """Components or environments that do not exist, or times that do not make a window."""

    type = "/problems/invalid-maintenance"
    title = "Invalid maintenance window"


def _field_error(loc: list[str | int], message: str, code: str = "value_error") -> dict[str, Any]:
    return {"loc": loc, "msg": message, "type": code}


# -- reading -----------------------------------------------------------------------------


def etag(window: Maintenance) -> str:
    return f'"{window.id}.{window.version}"'


async def get(session: AsyncSession, maintenance_id: str) -> Maintenance:
    window = await session.get(Maintenance, maintenance_id, populate_existing=True)
    if window is None:
        raise MaintenanceNotFound(f"No maintenance window {maintenance_id!r}")
    return window


async def _locked(session: AsyncSession, maintenance_id: str) -> Maintenance:
    window = (
        await session.scalars(
            select(Maintenance)
            .where(Maintenance.id == maintenance_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if window is None:
        raise MaintenanceNotFound(f"No maintenance window {maintenance_id!r}")
    return window


@dataclass(frozen=True)
class Details:
    """What a window's answer shows beside its row."""

    components: dict[str, list[Component]]
    environments: dict[str, list[str]]
    updates: dict[str, list[MaintenanceUpdate]]


async def details(session: AsyncSession, windows: Sequence[Maintenance]) -> Details:
    """The components (with their status now), environments and updates of ``windows``,
    in three queries whatever their number."""
    ids = [w.id for w in windows]
    components: dict[str, list[Component]] = {i: [] for i in ids}
    environments: dict[str, list[str]] = {i: [] for i in ids}
    updates: dict[str, list[MaintenanceUpdate]] = {i: [] for i in ids}
    if not ids:
        return Details(components, environments, updates)
    for maintenance_id, component in await session.execute(
        select(MaintenanceComponent.maintenance_id, Component)
        .join(Component, Component.id == MaintenanceComponent.component_id)
        .where(MaintenanceComponent.maintenance_id.in_(ids))
        .order_by(Component.group_name, Component.position, Component.name)
        .execution_options(populate_existing=True)
    ):
        components[maintenance_id].append(component)
    for maintenance_id, name in await session.execute(
        select(MaintenanceEnvironment.maintenance_id, MaintenanceEnvironment.environment)
        .where(MaintenanceEnvironment.maintenance_id.in_(ids))
        .order_by(MaintenanceEnvironment.environment)
    ):
        environments[maintenance_id].append(name)
    for update in await session.scalars(
        select(MaintenanceUpdate)
        .where(MaintenanceUpdate.maintenance_id.in_(ids))
        .order_by(MaintenanceUpdate.created_at, MaintenanceUpdate.id)
    ):
        updates[update.maintenance_id].append(update)
    return Details(components, environments, updates)


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    environment: str | None = None
    component_id: str | None = None


async def list_page(
    session: AsyncSession, filters: Filters, page: CursorParams
) -> tuple[Sequence[Maintenance], str | None]:
    """Newest first."""
    statement = select(Maintenance)
    if filters.status is not None:
        statement = statement.where(Maintenance.status == filters.status)
    if filters.environment is not None:
        statement = statement.where(
            exists().where(
                MaintenanceEnvironment.maintenance_id == Maintenance.id,
                MaintenanceEnvironment.environment == filters.environment,
            )
        )
    if filters.component_id is not None:
        statement = statement.where(
            exists().where(
                MaintenanceComponent.maintenance_id == Maintenance.id,
                MaintenanceComponent.component_id == filters.component_id,
            )
        )
    return await paginate(
        session, statement, page, created_at=Maintenance.created_at, id=Maintenance.id
    )


# -- validation --------------------------------------------------------------------------


async def _check_components(session: AsyncSession, ids: Sequence[str]) -> None:
    known = set((await session.scalars(select(Component.id).where(Component.id.in_(ids)))).all())
    unknown = [(i, c) for i, c in enumerate(ids) if c not in known]
    if unknown:
        raise InvalidWindow(
            f"no component {', '.join(repr(c) for _, c in unknown)}",
            errors=[
                _field_error(["body", "components", i], f"unknown component {c!r}", "not_found")
                for i, c in unknown
            ],
        )


async def _check_environments(session: AsyncSession, names: Sequence[str]) -> None:
    known = set(
        (await session.scalars(select(Environment.name).where(Environment.name.in_(names)))).all()
    )
    unknown = [(i, n) for i, n in enumerate(names) if n not in known]
    if unknown:
        raise InvalidWindow(
            f"no environment {', '.join(repr(n) for _, n in unknown)}",
            errors=[
                _field_error(["body", "environments", i], f"unknown environment {n!r}", "not_found")
                for i, n in unknown
            ],
        )


def _check_times(scheduled_for: dt.datetime, scheduled_until: dt.datetime) -> None:
    if _utc(scheduled_until) <= _utc(scheduled_for):
        raise InvalidWindow(
            "`scheduled_until` must be after `scheduled_for`",
            errors=[
                _field_error(
                    ["body", "scheduled_until"], "must be after `scheduled_for`", "window_order"
                )
            ],
        )


# -- writing -----------------------------------------------------------------------------


async def _set_components(session: AsyncSession, window: Maintenance, ids: Sequence[str]) -> None:
    await session.execute(
        delete(MaintenanceComponent).where(MaintenanceComponent.maintenance_id == window.id)
    )
    await insert_rows(
        session,
        [MaintenanceComponent(maintenance_id=window.id, component_id=c) for c in sorted(ids)],
    )


async def _set_environments(
    session: AsyncSession, window: Maintenance, names: Sequence[str]
) -> None:
    await session.execute(
        delete(MaintenanceEnvironment).where(MaintenanceEnvironment.maintenance_id == window.id)
    )
    await insert_rows(
        session,
        [MaintenanceEnvironment(maintenance_id=window.id, environment=n) for n in sorted(names)],
    )


async def _component_ids(session: AsyncSession, window: Maintenance) -> list[str]:
    return list(
        (
            await session.scalars(
                select(MaintenanceComponent.component_id).where(
                    MaintenanceComponent.maintenance_id == window.id
                )
            )
        ).all()
    )


async def _claim(session: AsyncSession, window: Maintenance, now: dt.datetime) -> None:
    """Its components under maintenance while it lasts (started, verifying); none else."""
    held = window.status in LASTING
    ids = await _component_ids(session, window) if held else []
    await claims.set_claims(
        session, claims.MAINTENANCE, window.id, dict.fromkeys(ids, UNDER_MAINTENANCE), now=now
    )


async def _add_update(
    session: AsyncSession, window: Maintenance, body: str, actor: str, now: dt.datetime
) -> MaintenanceUpdate:
    update = MaintenanceUpdate(
        id=new_id(),
        maintenance_id=window.id,
        status=window.status,
        body=body,
        created_by=actor,
        created_at=now,
    )
    await insert_rows(session, [update])
    return update


async def _event_data(session: AsyncSession, window: Maintenance) -> dict[str, Any]:
    """The data of a maintenance event: the window as it is now."""
    found = await details(session, [window])
    data = MaintenanceChanged.model_validate(
        {
            "maintenance_id": window.id,
            "title": window.title,
            "status": window.status,
            "scheduled_for": window.scheduled_for,
            "scheduled_until": window.scheduled_until,
            "deploy_window": window.deploy_window,
            "components": [
                {"component_id": c.id, "name": c.name, "status": c.status}
                for c in found.components[window.id]
            ],
            "environments": found.environments[window.id],
            "started_at": window.started_at,
            "completed_at": window.completed_at,
            "links": {"self": f"{V1}/maintenances/{window.id}"},
        }
    ).model_dump(mode="json")
    return data


def _audit_view(window: Maintenance) -> dict[str, Any]:
    return {
        "title": window.title,
        "status": window.status,
        "scheduled_for": _utc(window.scheduled_for).isoformat(),
        "scheduled_until": _utc(window.scheduled_until).isoformat(),
        "deploy_window": window.deploy_window,
        "auto_transition": window.auto_transition,
    }


def _touch(window: Maintenance, now: dt.datetime) -> None:
    window.updated_at = now
    window.version += 1


async def create(uow: UnitOfWork, principal: Principal, body: MaintenanceCreate) -> Maintenance:
    """A scheduled window; ``maintenance.scheduled``. A window whose time has come
    already is started by the scheduler's next pass (and is in effect at once)."""
    session = uow.session
    now = utcnow()
    if body.scheduled_until <= now:
        raise InvalidWindow(
            "the window would have ended already: `scheduled_until` must be in the future",
            errors=[_field_error(["body", "scheduled_until"], "in the past", "window_past")],
        )
    await _check_components(session, body.components)
    await _check_environments(session, body.environments)
    window = Maintenance(
        id=new_id(),
        title=body.title,
        description=body.description,
        status="scheduled",
        scheduled_for=body.scheduled_for,
        scheduled_until=body.scheduled_until,
        deploy_window=body.deploy_window,
        auto_transition=body.auto_transition,
        created_by=principal.actor,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(window)
    await session.flush()
    await _set_components(session, window, body.components)
    await _set_environments(session, window, body.environments)
    await add_event(session, "maintenance.scheduled", await _event_data(session, window))
    await revision.bump(session)
    await audit_service.record(
        session,
        principal,
        action="maintenance.create",
        resource_type="maintenance",
        resource_id=window.id,
        summary={
            **_audit_view(window),
            "components": sorted(body.components),
            "environments": sorted(body.environments),
        },
    )
    return window


def _check_match(window: Maintenance, if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    tags = [tag.strip().removeprefix("W/") for tag in if_match.split(",")]
    if etag(window) not in tags:
        raise PreconditionFailed(
            "The maintenance window changed since it was read; read it again and retry"
        )


# What may change in each status (beyond title and description).
_CHANGEABLE: dict[str, frozenset[str]] = {
    "scheduled": frozenset(
        {
            "scheduled_for",
            "scheduled_until",
            "components",
            "environments",
            "deploy_window",
            "auto_transition",
        }
    ),
    "in_progress": frozenset(
        {"scheduled_until", "components", "environments", "deploy_window", "auto_transition"}
    ),
    "verifying": frozenset({"components", "environments"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
}


async def update(
    uow: UnitOfWork,
    principal: Principal,
    maintenance_id: str,
    body: MaintenanceChange,
    if_match: str | None,
) -> Maintenance:
    session = uow.session
    window = await _locked(session, maintenance_id)
    _check_match(window, if_match)
    changes = body.model_fields_set - {"title", "description"}
    refused = sorted(changes - _CHANGEABLE[window.status])
    if refused:
        raise IllegalTransition(
            f"the window is {window.status}: {', '.join(f'`{f}`' for f in refused)} can no "
            "longer change",
            extra={"status": window.status, "fields": refused},
        )
    now = utcnow()
    scheduled_for = body.scheduled_for or window.scheduled_for
    scheduled_until = body.scheduled_until or window.scheduled_until
    if "scheduled_for" in changes or "scheduled_until" in changes:
        _check_times(scheduled_for, scheduled_until)
    if body.components is not None:
        await _check_components(session, body.components)
    if body.environments is not None:
        await _check_environments(session, body.environments)
    if body.title is not None:
        window.title = body.title
    if body.description is not None:
        window.description = body.description
    window.scheduled_for = scheduled_for
    window.scheduled_until = scheduled_until
    if body.deploy_window is not None:
        window.deploy_window = body.deploy_window
    if body.auto_transition is not None:
        window.auto_transition = body.auto_transition
    _touch(window, now)
    await session.flush()
    if body.components is not None:
        await _set_components(session, window, body.components)
        await _claim(session, window, now)
    if body.environments is not None:
        await _set_environments(session, window, body.environments)
    await revision.bump(session)
    summary: dict[str, Any] = {"changed": sorted(body.model_fields_set), **_audit_view(window)}
    if body.components is not None:
        summary["components"] = sorted(body.components)
    if body.environments is not None:
        summary["environments"] = sorted(body.environments)
    await audit_service.record(
        session,
        principal,
        action="maintenance.update",
        resource_type="maintenance",
        resource_id=window.id,
        summary=summary,
    )
    return window


async def post_update(
    uow: UnitOfWork, principal: Principal, maintenance_id: str, body: MaintenanceUpdateCreate
) -> tuple[Maintenance, MaintenanceUpdate]:
    """A message to readers of the status page, in any status but cancelled."""
    session = uow.session
    window = await _locked(session, maintenance_id)
    if window.status == "cancelled":
        raise IllegalTransition(
            "the window was cancelled: it takes no more updates",
            extra={"status": window.status},
        )
    now = utcnow()
    entry = await _add_update(session, window, body.body, principal.actor, now)
    _touch(window, now)
    await revision.bump(session)
    await audit_service.record(
        session,
        principal,
        action="maintenance_update.create",
        resource_type="maintenance",
        resource_id=window.id,
        summary={"update_id": entry.id, "status": window.status},
    )
    return window, entry


# -- the lifecycle -----------------------------------------------------------------------

UNDER_MAINTENANCE = "under_maintenance"
# The statuses in which a window holds its components under maintenance.
LASTING = frozenset({"in_progress", "verifying"})
# Which status each move starts from, and where it leads.
MOVES: dict[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({"scheduled"}), "in_progress"),
    "verify": (frozenset({"in_progress"}), "verifying"),
    "complete": (frozenset({"in_progress", "verifying"}), "completed"),
    "cancel": (frozenset({"scheduled"}), "cancelled"),
}
DEFAULT_MESSAGES = {
    "start": "The scheduled maintenance is in progress.",
    "verify": "The maintenance has ended; the services are being verified.",
    "complete": "The scheduled maintenance has been completed.",
    "cancel": "The scheduled maintenance has been cancelled.",
}


async def _move(
    session: AsyncSession,
    actor: Principal,
    window: Maintenance,
    move: str,
    now: dt.datetime,
    message: str | None = None,
) -> Maintenance:
    sources, target = MOVES[move]
    if window.status not in sources:
        raise IllegalTransition(
            f"the window is {window.status}: it cannot {move} (only from "
            f"{' or '.join(sorted(sources))})",
            extra={"status": window.status},
        )
    window.status = target
    if target == "in_progress":
        window.started_at = now
    elif target == "verifying":
        window.verifying_at = now
    else:
        window.completed_at = now
    _touch(window, now)
    await session.flush()
    await _claim(session, window, now)
    await _add_update(session, window, message or DEFAULT_MESSAGES[move], actor.actor, now)
    # Each type written literally: the event catalog's test reads them from the source.
    if move == "start":
        await add_event(session, "maintenance.started", await _event_data(session, window))
    elif move == "complete":
        await add_event(session, "maintenance.completed", await _event_data(session, window))
    await revision.bump(session)
    await audit_service.record(
        session,
        actor,
        action=f"maintenance.{move}",
        resource_type="maintenance",
        resource_id=window.id,
        summary=_audit_view(window),
    )
    return window


async def transition(
    uow: UnitOfWork,
    principal: Principal,
    maintenance_id: str,
    move: str,
    message: str | None = None,
    *,
    now: dt.datetime | None = None,
) -> Maintenance:
    """``start``, ``complete`` or ``cancel`` a window by hand (409 from a status that does
    not allow it)."""
    window = await _locked(uow.session, maintenance_id)
    return await _move(uow.session, principal, window, move, now or utcnow(), message)


# -- the scheduler -----------------------------------------------------------------------

SCHEDULER = Principal.system("schedule:maintenances", Role.OPERATOR)


@dataclass
class Tick:
    """What one pass of the scheduler did (window ids)."""

    started: list[str] = field(default_factory=list)
    verifying: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "started": len(self.started),
            "verifying": len(self.verifying),
            "completed": len(self.completed),
        }


async def _unhealthy(session: AsyncSession, window: Maintenance) -> list[str]:
    """``environment/service`` of the window's environments whose last health check
    found them unhealthy."""
    rows = await session.execute(
        select(Service.environment, Service.name)
        .join(
            MaintenanceEnvironment,
            MaintenanceEnvironment.environment == Service.environment,
        )
        .where(
            MaintenanceEnvironment.maintenance_id == window.id,
            Service.health_status == "unhealthy",
        )
        .order_by(Service.environment, Service.name)
    )
    return [f"{environment}/{name}" for environment, name in rows]


async def tick(context: AppContext, now: dt.datetime) -> Tick:
    """One pass of the scheduler at ``now``: start the windows whose time has come, move
    the ones whose time is over to ``verifying``, and complete the verifying ones whose
    environments' services are not unhealthy (at once when they have none; anyway after
    the verification timeout). Windows the scheduler does not run (``auto_transition``
    false) are left to operators. Each window moves in a transaction of its own."""
    done = Tick()
    limit = dt.timedelta(seconds=context.settings.maintenances.verify_timeout_seconds)
    async with context.sessionmaker() as session:
        due = list(
            (
                await session.scalars(
                    select(Maintenance.id)
                    .where(
                        Maintenance.status == "scheduled",
                        Maintenance.auto_transition == true(),
                        Maintenance.scheduled_for <= now,
                    )
                    .order_by(Maintenance.scheduled_for, Maintenance.id)
                )
            ).all()
        )
    for maintenance_id in due:
        if await _scheduled_move(context, maintenance_id, "start", now, lambda w: True):
            done.started.append(maintenance_id)
    async with context.sessionmaker() as session:
        ended = list(
            (
                await session.scalars(
                    select(Maintenance.id)
                    .where(
                        Maintenance.status == "in_progress",
                        Maintenance.auto_transition == true(),
                        Maintenance.scheduled_until <= now,
                    )
                    .order_by(Maintenance.scheduled_until, Maintenance.id)
                )
            ).all()
        )
    for maintenance_id in ended:
        if await _scheduled_move(
            context,
            maintenance_id,
            "verify",
            now,
            lambda w: w.auto_transition and _utc(w.scheduled_until) <= now,
        ):
            done.verifying.append(maintenance_id)
    async with context.sessionmaker() as session:
        verifying = list(
            (
                await session.scalars(
                    select(Maintenance.id)
                    .where(Maintenance.status == "verifying", Maintenance.auto_transition == true())
                    .order_by(Maintenance.verifying_at, Maintenance.id)
                )
            ).all()
        )
    for maintenance_id in verifying:
        if await _verified(context, maintenance_id, now, limit):
            done.completed.append(maintenance_id)
    return done


async def _scheduled_move(
    context: AppContext,
    maintenance_id: str,
    move: str,
    now: dt.datetime,
    still: Callable[[Maintenance], bool],
) -> bool:
    """``move`` the window if it is still in a status (and state) that calls for it: an
    operator or another worker may have moved it since it was listed."""
    async with context.unit_of_work() as uow:
        window = await _locked(uow.session, maintenance_id)
        if window.status not in MOVES[move][0] or not still(window):
            return False
        await _move(uow.session, SCHEDULER, window, move, now)
    return True


async def _verified(
    context: AppContext, maintenance_id: str, now: dt.datetime, limit: dt.timedelta
) -> bool:
    async with context.unit_of_work() as uow:
        window = await _locked(uow.session, maintenance_id)
        if window.status != "verifying" or not window.auto_transition:
            return False
        unhealthy = await _unhealthy(uow.session, window)
        since = _utc(window.verifying_at or now)
        if unhealthy and now - since < limit:
            return False
        message = None
        if unhealthy:
            # Every maintenance update is public: it names no environment or service;
            # which ones were still unhealthy goes to the audit trail only.
            message = (
                "The maintenance has been completed; verification did not confirm that "
                "every affected system is back to normal."
            )
        await _move(uow.session, SCHEDULER, window, "complete", now, message)
        if unhealthy:
            await audit_service.record(
                uow.session,
                SCHEDULER,
                action="maintenance.unverified",
                resource_type="maintenance",
                resource_id=window.id,
                summary={
                    "unhealthy": unhealthy,
                    "verify_timeout_seconds": int(limit.total_seconds()),
                },
            )
    return True
