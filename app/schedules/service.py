"""Schedules: cron expressions that start runbooks, and the firing of their slots.

Firing (:func:`fire_due`, called by a worker's periodic job every few seconds) takes the
time as an argument. For each enabled schedule whose ``next_run_at`` has come, the slots
due since then are settled in **one transaction**:

- the latest due slot, if it is at most the grace period old, *fires*: a ``fired`` slot
  row and its run (:func:`app.runbooks.service.start_run`, as the system actor
  ``schedule:<name>`` with the runbook's role) are written together, and the run is
  enqueued after the commit under its own id;
- every older due slot (and the latest too, once past the grace period) is recorded
  ``missed`` — one row per slot, the latest :attr:`ScheduleSettings.max_missed_rows` of
  them — and reported (``schedule.missed`` event and an audit record). A missed slot is
  never run late, and a downtime never turns into a burst of runs;
- a run the runbook refuses (it left the catalog, or its parameters changed) leaves a
  ``failed`` slot with the reason (``schedule.failed``); the schedule stays enabled.

Each slot is settled exactly once however many workers fire at the same moment: the
schedule's row is locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL: a second worker skips
it; SQLite serialises writers anyway), its ``next_run_at`` is checked again under the
lock, and the unique ``(schedule_id, slot_at)`` constraint is the last word — a worker
that loses that race rolls its whole transaction back (run included).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.audit.models import Outcome
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.context import AppContext
from app.core.cron import Cron, InvalidCron, InvalidTimezone, due
from app.core.db import UnitOfWork, insert_rows, utcnow
from app.core.errors import (
    AppError,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
    is_unique_violation,
)
from app.core.ids import new_id
from app.core.pagination import CursorParams, paginate
from app.outbox.service import add_event
from app.runbooks import service as runbook_service
from app.runbooks.catalog import Runbook, catalog_of
from app.schedules.events import EVENT_SLOTS, links
from app.schedules.models import (
    Schedule,
    ScheduleDefault,
    ScheduleOrigin,
    ScheduleSlot,
    SlotStatus,
)
from app.schedules.schemas import ScheduleChange, ScheduleCreate

logger = logging.getLogger(__name__)

RECENT_SLOTS = 5
# Schedules settled in one pass at most (the next pass takes the rest).
BATCH = 100
SYSTEM = Principal.system("schedule:defaults", Role.ADMIN)


class ScheduleNotFound(NotFound):
    type = "/problems/schedule-not-found"
    title = "Schedule not found"


class ScheduleNameTaken(AppError):
    type = "/problems/schedule-name-taken"
    title = "Schedule name taken"
    status = 409


class InvalidSchedule(ValidationFailed):
    type = "/problems/invalid-schedule"
    title = "Invalid schedule"


def _field_error(name: str, msg: str, code: str) -> dict[str, Any]:
    return {"loc": ["body", name], "msg": msg, "type": code}


def etag(schedule: Schedule) -> str:
    return f'"{schedule.id}.{schedule.revision}"'


def cron_of(schedule: Schedule) -> Cron:
    return Cron.parse(schedule.cron, schedule.timezone)


def _next_slot(cron_text: str, timezone: str, now: dt.datetime) -> dt.datetime:
    """The first slot after ``now``; a 422 naming ``cron`` or ``timezone`` otherwise."""
    try:
        return Cron.parse(cron_text, timezone).next_after(now)
    except InvalidTimezone as exc:
        errors = [_field_error("timezone", str(exc), "timezone")]
        raise InvalidSchedule(str(exc), errors=errors) from None
    except InvalidCron as exc:
        raise InvalidSchedule(str(exc), errors=[_field_error("cron", str(exc), "cron")]) from None


# -- reading -----------------------------------------------------------------------------


async def get(session: AsyncSession, schedule_id: str) -> Schedule:
    schedule = await session.get(Schedule, schedule_id, populate_existing=True)
    if schedule is None:
        raise ScheduleNotFound(f"No schedule {schedule_id!r}")
    return schedule


async def _locked(session: AsyncSession, schedule_id: str) -> Schedule:
    schedule = (
        await session.scalars(
            select(Schedule)
            .where(Schedule.id == schedule_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if schedule is None:
        raise ScheduleNotFound(f"No schedule {schedule_id!r}")
    return schedule


async def list_page(
    session: AsyncSession, page: CursorParams, *, runbook: str | None = None
) -> tuple[Sequence[Schedule], str | None]:
    """Newest first."""
    statement = select(Schedule)
    if runbook is not None:
        statement = statement.where(Schedule.runbook == runbook)
    return await paginate(session, statement, page, created_at=Schedule.created_at, id=Schedule.id)


async def slots_page(
    session: AsyncSession, schedule_id: str, page: CursorParams, *, status: str | None = None
) -> tuple[Sequence[ScheduleSlot], str | None]:
    """A schedule's slots, newest first (404 for an unknown schedule)."""
    await get(session, schedule_id)
    statement = select(ScheduleSlot).where(ScheduleSlot.schedule_id == schedule_id)
    if status is not None:
        statement = statement.where(ScheduleSlot.status == status)
    return await paginate(
        session, statement, page, created_at=ScheduleSlot.created_at, id=ScheduleSlot.id
    )


async def recent_slots(
    session: AsyncSession, schedule_ids: Sequence[str]
) -> dict[str, list[ScheduleSlot]]:
    """The latest :data:`RECENT_SLOTS` slots of each schedule, newest first (one query)."""
    if not schedule_ids:
        return {}
    ranked = (
        select(
            ScheduleSlot.id,
            func.row_number()
            .over(
                partition_by=ScheduleSlot.schedule_id,
                order_by=(ScheduleSlot.slot_at.desc(), ScheduleSlot.id.desc()),
            )
            .label("rank"),
        )
        .where(ScheduleSlot.schedule_id.in_(sorted(set(schedule_ids))))
        .subquery()
    )
    rows = await session.scalars(
        select(ScheduleSlot)
        .join(ranked, ranked.c.id == ScheduleSlot.id)
        .where(ranked.c.rank <= RECENT_SLOTS)
        .order_by(ScheduleSlot.slot_at.desc(), ScheduleSlot.id.desc())
    )
    found: dict[str, list[ScheduleSlot]] = {}
    for slot in rows:
        found.setdefault(slot.schedule_id, []).append(slot)
    return found


# -- changes -----------------------------------------------------------------------------


def _runbook(context: AppContext, name: str) -> Runbook:
    runbook = catalog_of(context).get(name)
    if runbook is None:
        msg = f"no runbook {name!r} in the catalog"
        raise InvalidSchedule(msg, errors=[_field_error("runbook", msg, "unknown_runbook")])
    return runbook


async def _check_allowed(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    runbook_name: str,
    parameters: dict[str, Any],
) -> None:
    """The runbook is in the catalog (422 otherwise) and the caller could start it now
    with ``parameters`` (a schedule starts nothing its creator could not): 403 below its
    role or outside the caller's environment, 422 for parameters it refuses, 404 for an
    environment the caller cannot see."""
    _runbook(context, runbook_name)
    await runbook_service.prepare(uow, context, principal, runbook_name, parameters)


def _audit_view(schedule: Schedule) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "runbook": schedule.runbook,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "parameters": sorted(schedule.parameters),  # names only: values may be sensitive
        "next_run_at": schedule.next_run_at.isoformat() if schedule.next_run_at else None,
    }


async def _name_free(session: AsyncSession, name: str, schedule_id: str | None = None) -> None:
    taken = await session.scalar(select(Schedule.id).where(Schedule.name == name))
    if taken is not None and taken != schedule_id:
        raise ScheduleNameTaken(f"a schedule named {name!r} exists already")


async def _flush_named(session: AsyncSession, name: str) -> None:
    """Flush; a concurrent schedule of the same name is a 409, not a 500."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if is_unique_violation(exc):
            raise ScheduleNameTaken(f"a schedule named {name!r} exists already") from None
        raise


async def create(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    body: ScheduleCreate,
    *,
    now: dt.datetime | None = None,
) -> Schedule:
    session = uow.session
    now = now or utcnow()
    next_run_at = _next_slot(body.cron, body.timezone, now)
    await _check_allowed(uow, context, principal, body.runbook, dict(body.parameters))
    await _name_free(session, body.name)
    schedule = Schedule(
        id=new_id(),
        name=body.name,
        runbook=body.runbook,
        parameters=dict(body.parameters),
        cron=body.cron,
        timezone=body.timezone,
        enabled=body.enabled,
        origin=ScheduleOrigin.API.value,
        next_run_at=next_run_at if body.enabled else None,
        created_by=principal.actor,
        revision=1,
        created_at=now,
        updated_at=now,
    )
    session.add(schedule)
    await _flush_named(session, body.name)
    await audit_service.record(
        session,
        principal,
        action="schedule.create",
        resource_type="schedule",
        resource_id=schedule.id,
        summary=_audit_view(schedule),
    )
    return schedule


def _check_match(schedule: Schedule, if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    tags = [tag.strip().removeprefix("W/") for tag in if_match.split(",")]
    if etag(schedule) not in tags:
        raise PreconditionFailed("The schedule changed since it was read; read it again and retry")


async def update_schedule(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    schedule_id: str,
    body: ScheduleChange,
    if_match: str | None,
    *,
    now: dt.datetime | None = None,
) -> Schedule:
    session = uow.session
    now = now or utcnow()
    schedule = await _locked(session, schedule_id)
    _check_match(schedule, if_match)
    changed = body.model_fields_set
    cron_text = body.cron if body.cron is not None else schedule.cron
    timezone = body.timezone if body.timezone is not None else schedule.timezone
    enabled = body.enabled if body.enabled is not None else schedule.enabled
    next_run_at = _next_slot(cron_text, timezone, now)
    runbook = body.runbook if body.runbook is not None else schedule.runbook
    parameters = body.parameters if body.parameters is not None else schedule.parameters
    # Whoever changes a schedule must be allowed to start what it will start.
    await _check_allowed(uow, context, principal, runbook, dict(parameters))
    if body.name is not None and body.name != schedule.name:
        await _name_free(session, body.name, schedule.id)
        schedule.name = body.name
    schedule.runbook = runbook
    schedule.parameters = dict(parameters)
    # The next slot is counted from now only when when-it-fires changes: a PATCH that
    # repeats the current values must not skip (and so hide) a slot that is due.
    if (cron_text, timezone, enabled) != (schedule.cron, schedule.timezone, schedule.enabled):
        schedule.cron, schedule.timezone, schedule.enabled = cron_text, timezone, enabled
        schedule.next_run_at = next_run_at if enabled else None
    schedule.revision += 1
    schedule.updated_at = now
    await _flush_named(session, schedule.name)
    await audit_service.record(
        session,
        principal,
        action="schedule.update",
        resource_type="schedule",
        resource_id=schedule.id,
        summary={"changed": sorted(changed), **_audit_view(schedule)},
    )
    return schedule


async def delete_schedule(
    uow: UnitOfWork, principal: Principal, schedule_id: str, if_match: str | None
) -> None:
    """Its slots go with it. A default schedule deleted stays deleted (its
    :class:`ScheduleDefault` row remains)."""
    session = uow.session
    schedule = await _locked(session, schedule_id)
    _check_match(schedule, if_match)
    summary = _audit_view(schedule)
    await session.delete(schedule)
    await session.flush()
    await audit_service.record(
        session,
        principal,
        action="schedule.delete",
        resource_type="schedule",
        resource_id=schedule_id,
        summary={**summary, "origin": schedule.origin},
    )


# -- default schedules -------------------------------------------------------------------


async def ensure_defaults(context: AppContext, now: dt.datetime) -> list[str]:
    """Create the default schedule of each catalog runbook that declares one and has none
    yet (its :class:`ScheduleDefault` row records that it was created, so one deleted is
    not created again). Each in a transaction of its own; among concurrent workers the
    row's primary key decides. Returns the names of the runbooks whose default was
    created now."""
    wanted = [r for r in catalog_of(context).runbooks() if r.schedule is not None]
    if not wanted:
        return []
    async with context.sessionmaker() as session:
        done = set((await session.scalars(select(ScheduleDefault.runbook))).all())
    created = []
    for runbook in wanted:
        if runbook.name in done:
            continue
        try:
            if await _create_default(context, runbook, now):
                created.append(runbook.name)
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            # Another worker created it first.
    return created


async def _create_default(context: AppContext, runbook: Runbook, now: dt.datetime) -> bool:
    default = runbook.schedule
    assert default is not None
    try:
        next_run_at = Cron.parse(default.cron, default.timezone).next_after(now)
    except (InvalidCron, InvalidTimezone) as exc:
        logger.error("runbook %s: its default schedule is invalid: %s", runbook.name, exc)
        return False
    async with context.unit_of_work() as uow:
        session = uow.session
        session.add(ScheduleDefault(runbook=runbook.name, created_at=now))
        await session.flush()
        taken = await session.scalar(select(Schedule.id).where(Schedule.name == runbook.name))
        if taken is not None:
            # A schedule of that name was made by hand: it stands; the default is not added.
            await audit_service.record(
                session,
                SYSTEM,
                action="schedule.default_skipped",
                resource_type="schedule",
                resource_id=taken,
                summary={"runbook": runbook.name, "reason": "a schedule of that name exists"},
            )
            return False
        schedule = Schedule(
            id=new_id(),
            name=runbook.name,
            runbook=runbook.name,
            parameters=dict(default.parameters),
            cron=default.cron,
            timezone=default.timezone,
            enabled=True,
            origin=ScheduleOrigin.DEFAULT.value,
            next_run_at=next_run_at,
            created_by=SYSTEM.actor,
            revision=1,
            created_at=now,
            updated_at=now,
        )
        session.add(schedule)
        await session.flush()
        await audit_service.record(
            session,
            SYSTEM,
            action="schedule.create",
            resource_type="schedule",
            resource_id=schedule.id,
            summary={**_audit_view(schedule), "origin": schedule.origin},
        )
    return True


# -- firing ------------------------------------------------------------------------------


@dataclass
class Fired:
    """What one pass did: run ids started, slots missed and failed (counts)."""

    runs: list[str] = field(default_factory=list)
    missed: int = 0
    failed: int = 0
    skipped: int = 0  # schedules another worker was settling

    def counts(self) -> dict[str, int]:
        return {
            "fired": len(self.runs),
            "missed": self.missed,
            "failed": self.failed,
            "skipped": self.skipped,
        }


async def fire_due(context: AppContext, now: dt.datetime) -> Fired:
    """Settle the due slots of every enabled schedule at ``now`` (see the module's
    docstring); each schedule in a transaction of its own."""
    done = Fired()
    async with context.sessionmaker() as session:
        ids = list(
            (
                await session.scalars(
                    select(Schedule.id)
                    .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                    .order_by(Schedule.next_run_at, Schedule.id)
                    .limit(BATCH)
                )
            ).all()
        )
    for schedule_id in ids:
        try:
            await _settle(context, schedule_id, now, done)
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            # Another worker settled these slots first: its transaction stands, ours is
            # rolled back (our run with it).
            done.skipped += 1
    return done


async def _settle(context: AppContext, schedule_id: str, now: dt.datetime, done: Fired) -> None:
    settings = context.settings.schedules
    grace = dt.timedelta(seconds=settings.grace_seconds)
    async with context.unit_of_work() as uow:
        session = uow.session
        schedule = (
            await session.scalars(
                select(Schedule)
                .where(Schedule.id == schedule_id)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
        ).one_or_none()
        if schedule is None or not schedule.enabled or schedule.next_run_at is None:
            done.skipped += schedule is None
            return
        if schedule.next_run_at > now:
            return  # settled by another worker since it was listed
        try:
            cron = cron_of(schedule)
        except (InvalidCron, InvalidTimezone) as exc:  # stored before a stricter rule
            logger.error("schedule %s cannot be read: %s", schedule.name, exc)
            return
        slots = due(cron, schedule.next_run_at, now, keep=settings.max_missed_rows + 1)
        if slots is None:
            return
        latest = slots.recent[-1]
        fire = now - latest <= grace
        missed_rows = slots.recent[:-1] if fire else slots.recent
        missed_rows = missed_rows[-settings.max_missed_rows :] if missed_rows else []
        missed_count = slots.count - 1 if fire else slots.count
        run_id: str | None = None
        if missed_count:
            await _record_missed(
                session, schedule, missed_rows, missed_count, slots.first, settings.grace_seconds
            )
            done.missed += missed_count
        if fire:
            run_id = await _fire(uow, context, schedule, latest, done)
        schedule.last_slot_at = latest
        if run_id is not None:
            schedule.last_run_id = run_id
        schedule.next_run_at = cron.next_after(max(latest, now))
        schedule.updated_at = now
        # Not a change of its definition: the ETag (``revision``) stays.
        await session.flush()
    if run_id is not None:
        done.runs.append(run_id)


async def _record_missed(
    session: AsyncSession,
    schedule: Schedule,
    rows: list[dt.datetime],
    count: int,
    first: dt.datetime,
    grace_seconds: int,
) -> None:
    earlier = count - len(rows)
    slots = [
        ScheduleSlot(
            id=new_id(),
            schedule_id=schedule.id,
            slot_at=slot,
            status=SlotStatus.MISSED.value,
            run_id=None,
            detail="not fired within the grace period: not run late",
            created_at=utcnow(),
        )
        for slot in rows
    ]
    if earlier and slots:
        slots[0].detail = (
            f"not fired within the grace period: not run late; {earlier} earlier slot(s) "
            f"missed too, from {first.isoformat()}"
        )
    await insert_rows(session, slots)
    shown = rows[-EVENT_SLOTS:]
    data = {
        "schedule_id": schedule.id,
        "name": schedule.name,
        "runbook": schedule.runbook,
        "missed": count,
        "first_slot_at": first.isoformat(),
        "last_slot_at": rows[-1].isoformat() if rows else first.isoformat(),
        "slots": [slot.isoformat() for slot in shown],
        "grace_seconds": grace_seconds,
        "links": links(schedule.id),
    }
    await add_event(session, "schedule.missed", data)
    await audit_service.record(
        session,
        _actor(schedule),
        action="schedule.missed",
        resource_type="schedule",
        resource_id=schedule.id,
        summary={k: v for k, v in data.items() if k != "links"},
    )
    logger.warning(
        "schedule %s missed %d slot(s) from %s to %s",
        schedule.name,
        count,
        data["first_slot_at"],
        data["last_slot_at"],
    )


def _actor(schedule: Schedule, role: Role = Role.OPERATOR) -> Principal:
    """Who a schedule acts as: ``schedule:<name>`` (with the runbook's role when it
    starts a run)."""
    return Principal.system(f"schedule:{schedule.name}", role)


def _refusal(exc: AppError) -> str:
    """Why the runbook refused the run, in the problem's words (field errors included;
    never the values)."""
    reason = exc.detail or exc.title
    for error in exc.errors or []:
        where = ".".join(str(part) for part in error.get("loc", []))
        reason += f"; {where}: {error.get('msg', '')}"
    return reason[:1900]


async def _fire(
    uow: UnitOfWork, context: AppContext, schedule: Schedule, slot_at: dt.datetime, done: Fired
) -> str | None:
    """The slot's row (its unique constraint decides among workers) and its run; a run
    the runbook refuses leaves the slot ``failed`` (and ``schedule.failed``)."""
    session = uow.session
    slot = ScheduleSlot(
        id=new_id(),
        schedule_id=schedule.id,
        slot_at=slot_at,
        status=SlotStatus.FIRED.value,
        run_id=None,
        detail=None,
        created_at=utcnow(),
    )
    session.add(slot)
    await session.flush()  # IntegrityError: another worker fired this slot
    runbook = catalog_of(context).get(schedule.runbook)
    reason: str | None = None
    run_id: str | None = None
    if runbook is None:
        reason = f"no runbook {schedule.runbook!r} in the catalog"
    else:
        try:
            # A savepoint: whatever the refused attempt wrote goes, the slot stays.
            async with session.begin_nested():
                run = await runbook_service.start_run(
                    uow,
                    context,
                    _actor(schedule, runbook.role),
                    schedule.runbook,
                    dict(schedule.parameters),
                    origin="schedule",
                )
            run_id = run.id
        except AppError as exc:
            reason = _refusal(exc)
    if run_id is not None:
        slot.run_id = run_id
        await session.flush()
        return run_id
    assert reason is not None
    slot.status = SlotStatus.FAILED.value
    slot.detail = reason
    await session.flush()
    await add_event(
        session,
        "schedule.failed",
        {
            "schedule_id": schedule.id,
            "name": schedule.name,
            "runbook": schedule.runbook,
            "slot_at": slot_at.isoformat(),
            "reason": reason,
            "links": links(schedule.id),
        },
    )
    await audit_service.record(
        session,
        _actor(schedule),
        action="schedule.failed",
        outcome=Outcome.FAILED,
        resource_type="schedule",
        resource_id=schedule.id,
        summary={"runbook": schedule.runbook, "slot_at": slot_at.isoformat(), "reason": reason},
    )
    logger.warning("schedule %s: slot %s failed: %s", schedule.name, slot_at.isoformat(), reason)
    done.failed += 1
    return None


async def tick(context: AppContext, now: dt.datetime) -> Fired:
    """One pass of the worker's periodic job: create missing default schedules, then
    fire what is due."""
    await ensure_defaults(context, now)
    return await fire_due(context, now)
