"""Schedules and their slots as the API answers them."""

from __future__ import annotations

from app.core.paths import V1
from app.schedules.models import Schedule, ScheduleSlot
from app.schedules.schemas import ScheduleOut, SlotOut


def location(schedule_id: str) -> str:
    return f"{V1}/schedules/{schedule_id}"


def slot_out(slot: ScheduleSlot) -> SlotOut:
    return SlotOut.model_validate(
        {
            "id": slot.id,
            "slot_at": slot.slot_at,
            "status": slot.status,
            "run_id": slot.run_id,
            "detail": slot.detail,
            "created_at": slot.created_at,
        }
    )


def schedule_out(schedule: Schedule, recent: dict[str, list[ScheduleSlot]]) -> ScheduleOut:
    return ScheduleOut.model_validate(
        {
            "id": schedule.id,
            "name": schedule.name,
            "runbook": schedule.runbook,
            "parameters": schedule.parameters,
            "cron": schedule.cron,
            "timezone": schedule.timezone,
            "enabled": schedule.enabled,
            "origin": schedule.origin,
            "next_run_at": schedule.next_run_at,
            "last_slot_at": schedule.last_slot_at,
            "last_run_id": schedule.last_run_id,
            "created_by": schedule.created_by,
            "created_at": schedule.created_at,
            "updated_at": schedule.updated_at,
            "recent_slots": [slot_out(s) for s in recent.get(schedule.id, [])],
        }
    )
