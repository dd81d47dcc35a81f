"""The events of schedules: a slot that was missed (nothing ran it in time) and one that
failed (its run could not be created), each written in the transaction that records the
slot."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from app.core.paths import V1
from app.outbox.catalog import EventData, EventLinks, EventType

SCHEDULE_MISSED = "schedule.missed"
SCHEDULE_FAILED = "schedule.failed"
# How many missed slots an event lists (its count says how many there were).
EVENT_SLOTS = 20


class ScheduleMissedData(EventData):
    """Slots of a schedule that did not run: no worker fired them within the grace period
    (everything was down, or busy). They are not run late."""

    schedule_id: str
    name: str
    runbook: str
    missed: int = Field(description="How many slots were missed (at least this many).")
    first_slot_at: dt.datetime = Field(description="The earliest slot missed.")
    last_slot_at: dt.datetime = Field(description="The latest slot missed.")
    slots: list[dt.datetime] = Field(
        description=f"The latest missed slots, oldest first (at most {EVENT_SLOTS})."
    )
    grace_seconds: int = Field(description="How late a slot may still fire.")
    links: EventLinks


class ScheduleFailedData(EventData):
    """A slot whose run could not be created: the runbook is gone from the catalog or
    refused the schedule's parameters. The schedule stays enabled."""

    schedule_id: str
    name: str
    runbook: str
    slot_at: dt.datetime
    reason: str
    links: EventLinks


def links(schedule_id: str) -> dict[str, str]:
    return {"self": f"{V1}/schedules/{schedule_id}"}


_ID = "0193f0c2-5a4e-7d1c-9b2a-3c4d5e6f7a8b"
_MISSED: dict[str, Any] = {
    "schedule_id": _ID,
    "name": "db-vacuum-weekly",
    "runbook": "db-vacuum",
    "missed": 3,
    "first_slot_at": "2026-01-01T02:00:00Z",
    "last_slot_at": "2026-01-01T04:00:00Z",
    "slots": ["2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z"],
    "grace_seconds": 300,
    "links": links(_ID),
}
_FAILED: dict[str, Any] = {
    "schedule_id": _ID,
    "name": "db-vacuum-weekly",
    "runbook": "db-vacuum",
    "slot_at": "2026-01-01T04:00:00Z",
    "reason": "the runbook refused the parameters: minutes: Input should be a valid integer",
    "links": links(_ID),
}

EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        SCHEDULE_MISSED,
        "Slots of a schedule were missed (no worker fired them in time); they are not run late.",
        ScheduleMissedData,
        _MISSED,
    ),
    EventType(
        SCHEDULE_FAILED,
        "A slot of a schedule could not start its run (the runbook refused it).",
        ScheduleFailedData,
        _FAILED,
    ),
)
