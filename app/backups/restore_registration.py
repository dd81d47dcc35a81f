"""What restores contribute: the ``restore`` run kind (its finalizer, compensation and
end hook), the actions of its steps, and the ``restore.*`` events (the ``backup.*``
ones are registered with the backups)."""

from __future__ import annotations

from app.backups import events, restore_actions, restores
from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES
from app.runs.actions import ACTIONS, Action
from app.runs.kinds import KINDS, KindHooks
from app.runs.models import RunKind


def register(registry: Registry) -> None:
    registry[KINDS].add(
        RunKind.RESTORE.value,
        KindHooks(
            finalizer=restores.finalize,
            on_finish=restores.on_finish,
            compensate=restores.compensate,
        ),
    )
    steps = registry[ACTIONS]
    # Re-hashing and probing are safe to repeat; the others change things (a new backup,
    # stopped services, the target database) and are not run twice by a resumed run.
    steps.add(
        "restore_check",
        Action(restore_actions.BackupParams, restore_actions.check, idempotent=True),
    )
    steps.add(
        "restore_safety_backup",
        Action(restore_actions.EnvironmentParams, restore_actions.safety_backup, idempotent=False),
    )
    steps.add(
        "restore_stop_services",
        Action(restore_actions.ServicesParams, restore_actions.stop_services, idempotent=False),
    )
    steps.add(
        "restore_database",
        Action(restore_actions.BackupParams, restore_actions.restore_database, idempotent=False),
    )
    steps.add(
        "restore_start_services",
        Action(restore_actions.ServicesParams, restore_actions.start_services, idempotent=False),
    )
    steps.add(
        "restore_verify_health",
        Action(restore_actions.ServicesParams, restore_actions.verify_health, idempotent=True),
    )
    for event in events.EVENT_TYPES:
        if event.name.startswith("restore."):
            registry[EVENT_TYPES].add(event.name, event)
