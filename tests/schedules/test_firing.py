"""Firing with a clock the test holds: one run per slot (even when two firers race, on
SQLite and on PostgreSQL), slots missed during a downtime reported and never run late,
a disabled schedule never fired, a refused run recorded as a failed slot, and the
runbooks' default schedules created once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from arq.constants import job_key_prefix
from sqlalchemy import delete, select

from app.bootstrap import build_context
from app.core.context import AppContext
from app.core.settings import ScheduleSettings, Settings
from app.runs.models import RunStatus
from app.schedules import service
from app.schedules.events import ScheduleFailedData, ScheduleMissedData
from app.schedules.models import Schedule, ScheduleDefault, ScheduleSlot
from tests.factories import IssuedToken
from tests.helpers import audit_events_after, last_audit_seq
from tests.schedules.conftest import (
    NOOP,
    add_schedule,
    events,
    runs,
    schedule_row,
    slots,
)
from workers.main import cron_jobs
from workers.schedules import fire_schedules
from workers.state import WorkerState

T0 = dt.datetime(2026, 6, 1, 1, 0, tzinfo=dt.UTC)  # a slot of every hourly schedule
SECOND = dt.timedelta(seconds=1)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)


@pytest_asyncio.fixture
async def other(settings: Settings) -> AsyncIterator[AppContext]:
    """A second application context (engine, pools): another worker process's."""
    context = build_context(settings)
    yield context
    await context.aclose()


def with_settings(context: AppContext, **values: int) -> AppContext:
    """The same context with other schedule settings (sharing its engine and pools)."""
    schedules = ScheduleSettings(**{**context.settings.schedules.model_dump(), **values})
    settings = context.settings.model_copy(update={"schedules": schedules})
    return dataclasses.replace(context, settings=settings)


async def test_a_slot_fires_once_with_its_run(context: AppContext) -> None:
    schedule_id = await add_schedule(context, next_run_at=T0, parameters={"label": "a"})
    assert (await service.fire_due(context, T0 - SECOND)).counts()["fired"] == 0
    seq = await last_audit_seq(context)

    done = await service.fire_due(context, T0 + 3 * SECOND)
    assert done.counts() == {"fired": 1, "missed": 0, "failed": 0, "skipped": 0}
    [run] = await runs(context)
    assert done.runs == [run.id]
    assert run.status == RunStatus.QUEUED.value
    assert run.requested_by == "schedule:hourly"
    # Enqueued after the commit, under the run's own id.
    assert await context.redis.exists(job_key_prefix + run.id)
    [slot] = await slots(context, schedule_id)
    assert (slot.slot_at, slot.status, slot.run_id) == (T0, "fired", run.id)
    schedule = await schedule_row(context, schedule_id)
    assert schedule.last_slot_at == T0
    assert schedule.last_run_id == run.id
    assert schedule.next_run_at == T0 + HOUR
    assert schedule.revision == 1  # firing is not a change of the definition
    audit = await audit_events_after(context, seq)
    assert [e.actor_name for e in audit] == ["schedule:hourly"] * len(audit)

    # The same moment again, and later within the hour: nothing more.
    for moment in (T0 + 3 * SECOND, T0 + 30 * MINUTE, T0 + HOUR - SECOND):
        assert (await service.fire_due(context, moment)).counts()["fired"] == 0
    assert len(await runs(context)) == 1
    assert (await service.fire_due(context, T0 + HOUR)).counts()["fired"] == 1
    assert [s.slot_at for s in await slots(context, schedule_id)] == [T0, T0 + HOUR]


async def test_two_firers_racing_start_one_run_per_slot(
    context: AppContext, other: AppContext
) -> None:
    """Two contexts (two engines: as two worker processes) fire the same due slots at
    once, slot after slot: each slot fires exactly once."""
    ids = [
        await add_schedule(context, name=f"every-{i}", cron="*/5 * * * *", next_run_at=T0)
        for i in range(4)
    ]
    moments = [T0 + n * 5 * MINUTE + 2 * SECOND for n in range(3)]
    for moment in moments:
        first, second = await asyncio.gather(
            service.fire_due(context, moment), service.fire_due(other, moment)
        )
        assert len(first.runs) + len(second.runs) == len(ids), (first, second)
        assert not set(first.runs) & set(second.runs)
    all_runs = await runs(context)
    assert len(all_runs) == len(ids) * len(moments)
    for schedule_id in ids:
        fired = await slots(context, schedule_id)
        assert [(s.slot_at, s.status) for s in fired] == [
            (T0 + n * 5 * MINUTE, "fired") for n in range(3)
        ]
        assert len({s.run_id for s in fired}) == 3
    assert not await events(context, "schedule.missed")


async def test_the_unique_slot_decides(context: AppContext) -> None:
    """A slot recorded already (another firer committed it) is not fired again: the
    loser's whole transaction, its run included, is rolled back."""
    schedule_id = await add_schedule(context, next_run_at=T0)
    async with context.unit_of_work() as uow:
        uow.session.add(ScheduleSlot(schedule_id=schedule_id, slot_at=T0, status="fired"))
    done = await service.fire_due(context, T0 + SECOND)
    assert done.counts() == {"fired": 0, "missed": 0, "failed": 0, "skipped": 1}
    assert await runs(context) == []
    assert (await schedule_row(context, schedule_id)).next_run_at == T0  # untouched


async def test_a_downtime_reports_the_missed_slots_and_fires_only_the_latest(
    context: AppContext,
) -> None:
    """Hourly, everything down from 00:59 to 04:00:30: the 04:00 slot is within the grace
    period and fires; 01:00, 02:00 and 03:00 are recorded missed and reported once —
    not run late."""
    schedule_id = await add_schedule(context, next_run_at=T0)
    seq = await last_audit_seq(context)
    done = await service.fire_due(context, T0 + 3 * HOUR + 30 * SECOND)
    assert done.counts() == {"fired": 1, "missed": 3, "failed": 0, "skipped": 0}
    assert len(await runs(context)) == 1
    recorded = await slots(context, schedule_id)
    assert [(s.slot_at, s.status) for s in recorded] == [
        (T0, "missed"),
        (T0 + HOUR, "missed"),
        (T0 + 2 * HOUR, "missed"),
        (T0 + 3 * HOUR, "fired"),
    ]
    [event] = await events(context, "schedule.missed")
    ScheduleMissedData.model_validate(event.data)  # as the event catalog documents it
    assert event.data["missed"] == 3
    assert event.data["first_slot_at"] == T0.isoformat()
    assert event.data["last_slot_at"] == (T0 + 2 * HOUR).isoformat()
    assert event.data["schedule_id"] == schedule_id
    missed_audit = await audit_events_after(context, seq, action="schedule.missed")
    assert [e.resource_id for e in missed_audit] == [schedule_id]
    schedule = await schedule_row(context, schedule_id)
    assert schedule.next_run_at == T0 + 4 * HOUR
    assert schedule.last_slot_at == T0 + 3 * HOUR


async def test_past_the_grace_period_every_slot_is_missed(context: AppContext) -> None:
    schedule_id = await add_schedule(context, next_run_at=T0)
    late = T0 + 3 * HOUR + 6 * MINUTE  # the grace period is 5 minutes
    done = await service.fire_due(context, late)
    assert done.counts() == {"fired": 0, "missed": 4, "failed": 0, "skipped": 0}
    assert await runs(context) == []
    assert [s.status for s in await slots(context, schedule_id)] == ["missed"] * 4
    [event] = await events(context, "schedule.missed")
    assert event.data["missed"] == 4
    schedule = await schedule_row(context, schedule_id)
    assert (schedule.last_slot_at, schedule.last_run_id) == (T0 + 3 * HOUR, None)
    # The next slot fires as usual.
    assert (await service.fire_due(context, T0 + 4 * HOUR + SECOND)).counts()["fired"] == 1


async def test_missed_rows_are_bounded(context: AppContext) -> None:
    """A minute schedule down for a day: the latest slots get a row each, the event and
    the audit record count them all."""
    bounded = with_settings(context, max_missed_rows=5)
    schedule_id = await add_schedule(context, cron="* * * * *", next_run_at=T0, name="minutely")
    done = await service.fire_due(bounded, T0 + 24 * HOUR + 10 * SECOND)
    assert done.counts() == {"fired": 1, "missed": 24 * 60, "failed": 0, "skipped": 0}
    recorded = await slots(context, schedule_id)
    assert [s.status for s in recorded] == ["missed"] * 5 + ["fired"]
    assert recorded[0].slot_at == T0 + 24 * HOUR - 5 * MINUTE
    assert recorded[0].detail is not None
    assert "1435 earlier" in recorded[0].detail
    [event] = await events(context, "schedule.missed")
    assert event.data["missed"] == 24 * 60
    assert event.data["first_slot_at"] == T0.isoformat()
    assert len(event.data["slots"]) == 5


async def test_a_disabled_schedule_never_fires(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    off = await add_schedule(context, next_run_at=T0, enabled=False, name="off")
    # Disabled by hand in the table with its next slot left set: still nothing.
    stale = await add_schedule(context, next_run_at=T0, name="stale")
    async with context.unit_of_work() as uow:
        schedule = await uow.session.get(Schedule, stale)
        assert schedule is not None
        schedule.enabled = False
    for moment in (T0, T0 + HOUR, T0 + 30 * HOUR):
        assert (await service.fire_due(context, moment)).counts() == {
            "fired": 0,
            "missed": 0,
            "failed": 0,
            "skipped": 0,
        }
    assert await runs(context) == []
    assert await slots(context, off) == []
    assert await slots(context, stale) == []
    assert not await events(context, "schedule.missed")


async def test_a_refused_run_leaves_a_failed_slot(context: AppContext) -> None:
    """Parameters the runbook refuses now (the catalog changed since the schedule was
    made), and a runbook gone from the catalog: failed slots with the reason, an event
    each, and the schedules stay enabled for their next slots."""
    refused = await add_schedule(
        context,
        name="refused",
        runbook="test-schedule-count",
        parameters={"count": "many"},
        next_run_at=T0,
    )
    gone = await add_schedule(context, name="gone", runbook="no-longer-here", next_run_at=T0)
    seq = await last_audit_seq(context)
    done = await service.fire_due(context, T0 + SECOND)
    assert done.counts() == {"fired": 0, "missed": 0, "failed": 2, "skipped": 0}
    assert await runs(context) == []
    [refused_slot] = await slots(context, refused)
    assert refused_slot.status == "failed"
    assert refused_slot.run_id is None
    assert refused_slot.detail
    assert "count" in refused_slot.detail
    [gone_slot] = await slots(context, gone)
    assert gone_slot.detail == "no runbook 'no-longer-here' in the catalog"
    failed = await events(context, "schedule.failed")
    for event in failed:
        ScheduleFailedData.model_validate(event.data)
    assert sorted(e.data["name"] for e in failed) == ["gone", "refused"]
    audit = await audit_events_after(context, seq, action="schedule.failed")
    assert {e.outcome for e in audit} == {"failed"}
    assert len(audit) == 2
    for schedule_id in (refused, gone):
        schedule = await schedule_row(context, schedule_id)
        assert schedule.enabled
        assert schedule.next_run_at == T0 + HOUR


async def test_slots_through_the_api(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    schedule_id = await add_schedule(context, next_run_at=T0)
    await service.fire_due(context, T0 + 2 * HOUR + SECOND)
    response = await client.get(f"/v1/schedules/{schedule_id}", headers=admin.headers)
    assert response.status_code == 200
    shown = response.json()
    [run] = await runs(context)
    assert shown["last_run_id"] == run.id
    assert [(s["status"], s["run_id"]) for s in shown["recent_slots"]] == [
        ("fired", run.id),
        ("missed", None),
        ("missed", None),
    ]
    page = await client.get(
        f"/v1/schedules/{schedule_id}/slots", params={"limit": 2}, headers=admin.headers
    )
    assert [s["status"] for s in page.json()["items"]] == ["fired", "missed"]
    assert page.json()["next_cursor"]
    only = await client.get(
        f"/v1/schedules/{schedule_id}/slots", params={"status": "fired"}, headers=admin.headers
    )
    assert [s["run_id"] for s in only.json()["items"]] == [run.id]


async def test_default_schedules_are_created_once(context: AppContext, other: AppContext) -> None:
    """The catalog's runbook with a default schedule gets it, once, however many workers
    start at once; deleted, it is not created again."""
    now = dt.datetime.now(dt.UTC)
    first, second = await asyncio.gather(
        service.ensure_defaults(context, now), service.ensure_defaults(other, now)
    )
    # The tests' runbook, and the shipped catalog's that declare one.
    created = sorted(first + second)
    assert "test-schedule-default" in created
    assert len(created) == len(set(created))
    async with context.sessionmaker() as session:
        defaults = list(await session.scalars(select(Schedule).where(Schedule.origin == "default")))
        marked = set(await session.scalars(select(ScheduleDefault.runbook)))
    assert sorted(s.name for s in defaults) == created
    assert marked == set(created)
    [schedule] = [s for s in defaults if s.name == "test-schedule-default"]
    assert (schedule.name, schedule.runbook, schedule.cron, schedule.timezone) == (
        "test-schedule-default",
        "test-schedule-default",
        "0 4 1 1 *",
        "Europe/Berlin",
    )
    assert schedule.parameters == {"label": "yearly"}
    assert schedule.next_run_at is not None
    assert schedule.next_run_at.month == 1
    assert schedule.next_run_at.day == 1
    assert await service.ensure_defaults(context, now) == []
    async with context.unit_of_work() as uow:
        await uow.session.execute(delete(Schedule).where(Schedule.id == schedule.id))
    assert await service.ensure_defaults(context, now) == []
    async with context.sessionmaker() as session:
        left = set(await session.scalars(select(Schedule.name).where(Schedule.origin == "default")))
    assert left == set(created) - {"test-schedule-default"}


async def test_a_schedule_of_an_unrelated_runbook_is_not_touched(context: AppContext) -> None:
    """Firing one schedule leaves the others' rows as they were."""
    due_id = await add_schedule(context, next_run_at=T0, name="due")
    later_id = await add_schedule(context, next_run_at=T0 + 2 * HOUR, name="later", runbook=NOOP)
    await service.fire_due(context, T0 + SECOND)
    later = await schedule_row(context, later_id)
    assert (later.next_run_at, later.last_slot_at) == (T0 + 2 * HOUR, None)
    assert (await schedule_row(context, due_id)).last_slot_at == T0


async def test_repeating_the_current_values_keeps_a_due_slot(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    """A PATCH that changes nothing of when a schedule fires keeps its next slot (a due
    one is still fired or reported, not skipped)."""
    schedule_id = await add_schedule(context, next_run_at=T0)
    response = await client.patch(
        f"/v1/schedules/{schedule_id}",
        json={"enabled": True, "cron": "0 * * * *", "parameters": {"label": "b"}},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    assert (await schedule_row(context, schedule_id)).next_run_at == T0
    assert (await service.fire_due(context, T0 + SECOND)).counts()["fired"] == 1


def test_the_job_runs_every_ten_seconds_on_one_worker_at_a_time() -> None:
    (job,) = [j for j in cron_jobs(Settings()) if j.coroutine is fire_schedules]
    assert job.unique
    assert job.run_at_startup
    assert job.second == set(range(0, 60, 10))
    off = Settings(schedules=ScheduleSettings(fire_enabled=False))
    assert not [j for j in cron_jobs(off) if j.coroutine is fire_schedules]
    with pytest.raises(ValueError, match="must divide 60"):
        ScheduleSettings(fire_every_seconds=7)


async def test_the_job_creates_the_defaults_and_fires(context: AppContext) -> None:
    """The worker's job at the real time: the default schedules exist afterwards, and a
    schedule whose slot has just come is fired."""
    if dt.datetime.now(dt.UTC).second >= 55:  # not across a minute: one slot due
        await asyncio.sleep(6)
    due = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    schedule_id = await add_schedule(context, cron="* * * * *", next_run_at=due, name="now")
    ctx: WorkerState = {"settings": context.settings, "context": context, "worker_id": "t"}
    counts = await fire_schedules(ctx)
    assert counts["fired"] == 1
    [slot] = await slots(context, schedule_id)
    assert (slot.slot_at, slot.status) == (due, "fired")
    async with context.sessionmaker() as session:
        defaults = set(await session.scalars(select(ScheduleDefault.runbook)))
    assert "test-schedule-default" in defaults
