"""Fixtures of the schedule tests: tokens of each role, schedules through the API, a
schedule written straight to the table (as an older catalog would have accepted it),
and what the slots, events and runs of a schedule are."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.core.context import AppContext
from app.outbox.models import OutboxEvent
from app.runs.models import Run
from app.schedules.models import Schedule, ScheduleSlot
from app.schedules.service import cron_of
from tests.factories import IssuedToken, issue_token

NOOP = "test-schedule-noop"


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


@pytest.fixture
async def viewer(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.VIEWER)


def body(name: str = "nightly", **extra: Any) -> dict[str, Any]:
    return {"name": name, "runbook": NOOP, "cron": "0 4 * * *", **extra}


async def create(
    client: httpx.AsyncClient, token: IssuedToken, payload: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post("/v1/schedules", json=payload, headers=token.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def add_schedule(
    context: AppContext,
    *,
    cron: str = "0 * * * *",
    timezone: str = "UTC",
    next_run_at: dt.datetime,
    name: str = "hourly",
    runbook: str = NOOP,
    parameters: dict[str, Any] | None = None,
    enabled: bool = True,
) -> str:
    """A schedule written to the table as it stands, whose next slot is ``next_run_at``
    (a slot of ``cron``)."""
    schedule = Schedule(
        name=name,
        runbook=runbook,
        parameters=parameters or {},
        cron=cron,
        timezone=timezone,
        enabled=enabled,
        next_run_at=next_run_at if enabled else None,
        created_by="tests",
    )
    assert cron_of(schedule).next_after(next_run_at - dt.timedelta(microseconds=1)) == next_run_at
    async with context.unit_of_work() as uow:
        uow.session.add(schedule)
        await uow.session.flush()
        return schedule.id


async def slots(context: AppContext, schedule_id: str) -> list[ScheduleSlot]:
    async with context.sessionmaker() as session:
        return list(
            await session.scalars(
                select(ScheduleSlot)
                .where(ScheduleSlot.schedule_id == schedule_id)
                .order_by(ScheduleSlot.slot_at)
            )
        )


async def schedule_row(context: AppContext, schedule_id: str) -> Schedule:
    async with context.sessionmaker() as session:
        found = await session.get(Schedule, schedule_id)
    assert found is not None
    return found


async def events(context: AppContext, type: str) -> list[OutboxEvent]:
    async with context.sessionmaker() as session:
        return list(
            await session.scalars(
                select(OutboxEvent).where(OutboxEvent.type == type).order_by(OutboxEvent.id)
            )
        )


async def runs(context: AppContext) -> list[Run]:
    async with context.sessionmaker() as session:
        return list(await session.scalars(select(Run).order_by(Run.created_at, Run.id)))
