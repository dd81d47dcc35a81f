"""What alerts and deployments ask of maintenance windows: whether a window in effect
covers components (alerts suppressed), whether one freezes an environment."""

from __future__ import annotations

import datetime as dt

import pytest

from app.components.models import Component
from app.core.context import AppContext
from app.maintenances import service
from app.maintenances.models import Maintenance, MaintenanceComponent, MaintenanceEnvironment

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


async def _window(
    context: AppContext,
    *,
    title: str,
    status: str,
    start: dt.datetime,
    end: dt.datetime,
    components: list[str] = (),  # type: ignore[assignment]
    environments: list[str] = (),  # type: ignore[assignment]
    deploy_window: bool = False,
    auto_transition: bool = True,
) -> str:
    async with context.unit_of_work() as uow:
        window = Maintenance(
            title=title,
            status=status,
            scheduled_for=start,
            scheduled_until=end,
            deploy_window=deploy_window,
            auto_transition=auto_transition,
            created_by="tests",
        )
        uow.session.add(window)
        await uow.session.flush()
        for component_id in components:
            uow.session.add(
                MaintenanceComponent(maintenance_id=window.id, component_id=component_id)
            )
        for name in environments:
            uow.session.add(MaintenanceEnvironment(maintenance_id=window.id, environment=name))
        return window.id


async def _component(context: AppContext, name: str) -> str:
    async with context.unit_of_work() as uow:
        component = Component(name=name)
        uow.session.add(component)
        await uow.session.flush()
        return component.id


async def test_suppressing_finds_a_window_in_effect_covering_a_component(
    context: AppContext,
) -> None:
    database = await _component(context, "Database")
    cache = await _component(context, "Cache")
    frontend = await _component(context, "Frontend")
    started = await _window(
        context,
        title="DB upgrade",
        status="in_progress",
        start=NOW - HOUR,
        end=NOW + HOUR,
        components=[database],
    )
    # Its time came; the scheduler has not passed yet: in effect all the same.
    due = await _window(
        context,
        title="Cache resize",
        status="scheduled",
        start=NOW - HOUR,
        end=NOW + HOUR,
        components=[cache],
    )
    # Not yet, over, cancelled, and a manual window nobody started.
    for title, status, start, end, auto in (
        ("later", "scheduled", NOW + HOUR, NOW + 2 * HOUR, True),
        ("over", "verifying", NOW - 2 * HOUR, NOW - HOUR, True),
        ("cancelled", "cancelled", NOW - HOUR, NOW + HOUR, True),
        ("by hand", "scheduled", NOW - HOUR, NOW + HOUR, False),
    ):
        await _window(
            context,
            title=title,
            status=status,
            start=start,
            end=end,
            components=[frontend],
            auto_transition=auto,
        )
    async with context.sessionmaker() as session:
        found = await service.suppressing(session, [database, frontend], NOW)
        assert found is not None
        assert found.id == started
        found = await service.suppressing(session, {cache}, NOW)
        assert found is not None
        assert found.id == due
        assert await service.suppressing(session, [frontend], NOW) is None
        assert await service.suppressing(session, [], NOW) is None
        # At its scheduled end a window the scheduler runs is over.
        assert await service.suppressing(session, [database], NOW + HOUR) is None


async def test_a_window_started_by_hand_lasts_until_completed(context: AppContext) -> None:
    database = await _component(context, "Database")
    window = await _window(
        context,
        title="Failover drill",
        status="in_progress",
        start=NOW - HOUR,
        end=NOW,
        components=[database],
        environments=["production"],
        auto_transition=False,
    )
    async with context.sessionmaker() as session:
        found = await service.suppressing(session, [database], NOW + 5 * HOUR)
        assert found is not None
        assert found.id == window
        with pytest.raises(service.DeployFreeze) as raised:
            await service.check_not_frozen(session, "production", NOW + 5 * HOUR)
    assert raised.value.extra["frozen_until"] is None
    assert "until it is completed" in str(raised.value.detail)


async def test_check_not_frozen_names_the_window(context: AppContext) -> None:
    window = await _window(
        context,
        title="DB upgrade",
        status="in_progress",
        start=NOW - HOUR,
        end=NOW + HOUR,
        environments=["production", "staging"],
    )
    await _window(
        context,
        title="Release train",
        status="in_progress",
        start=NOW - HOUR,
        end=NOW + HOUR,
        environments=["canary"],
        deploy_window=True,
    )
    async with context.sessionmaker() as session:
        with pytest.raises(service.DeployFreeze) as raised:
            await service.check_not_frozen(session, "production", NOW)
        error = raised.value
        assert (error.status, error.type) == (409, "/problems/deploy-freeze")
        assert "DB upgrade" in str(error.detail)
        assert window in str(error.detail)
        assert error.extra["maintenance_id"] == window
        assert error.extra["frozen_until"] == "2026-12-02T13:00:00Z"
        # A deploy window opens its environment; other environments are not frozen.
        await service.check_not_frozen(session, "canary", NOW)
        await service.check_not_frozen(session, "development", NOW)
        # After the window's scheduled end.
        await service.check_not_frozen(session, "production", NOW + HOUR)
