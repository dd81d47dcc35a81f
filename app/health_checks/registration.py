"""What the health checks contribute: their run kind (its finalizer, and its end hook
which adds the probes' summary to the event announcing the end), the daily check's
probes, and their events."""

from __future__ import annotations

from app.core.registry import Registry
from app.health_checks import events, plan, probes
from app.outbox.catalog import EVENT_TYPES
from app.runs.actions import ACTIONS, Action
from app.runs.kinds import KINDS, KindHooks
from app.runs.models import RunKind


def register(registry: Registry) -> None:
    registry[KINDS].add(
        RunKind.HEALTH_CHECK.value, KindHooks(finalizer=plan.finalize, on_finish=events.on_finish)
    )
    actions = registry[ACTIONS]
    actions.add("disk", Action(probes.DiskParams, probes.disk, idempotent=True))
    actions.add("memory", Action(probes.MemoryParams, probes.memory, idempotent=True))
    actions.add("log_errors", Action(probes.LogScanParams, probes.log_errors, idempotent=True))
    actions.add("database", Action(probes.NoParams, probes.database, idempotent=True))
    actions.add("redis", Action(probes.NoParams, probes.redis_ping, idempotent=True))
    actions.add("backup_age", Action(probes.BackupAgeParams, probes.backup_age, idempotent=True))
    for event in events.TYPES:
        registry[EVENT_TYPES].add(event.name, event)
