"""What the backups package contributes: the run kinds ``backup`` and
``backup_verification`` (their end hooks keep the backup rows true to their runs), the
step actions that take, re-hash and drill a backup, and the events of backups and
restores."""

from __future__ import annotations

from app.backups import actions, events
from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES
from app.runs.actions import ACTIONS, Action
from app.runs.kinds import KINDS, KindHooks
from app.runs.models import RunKind


def register(registry: Registry) -> None:
    # A backup's end is announced by its own events (backup.succeeded, backup.failed,
    # backup.verified…), in the transaction of the change: not by the run's end.
    registry[KINDS].add(
        RunKind.BACKUP.value, KindHooks(on_finish=actions.backup_finished, announce=False)
    )
    registry[KINDS].add(
        RunKind.BACKUP_VERIFICATION.value,
        KindHooks(on_finish=actions.verification_finished, announce=False),
    )
    catalog = registry[ACTIONS]
    catalog.add(
        "backup_take", Action(actions.BackupTakeParams, actions.backup_take, idempotent=False)
    )
    catalog.add(
        "backup_checksum", Action(actions.BackupRef, actions.backup_checksum, idempotent=True)
    )
    catalog.add("backup_drill", Action(actions.BackupRef, actions.backup_drill, idempotent=True))
    # restore.* are registered with the restores that write them.
    for event in events.EVENT_TYPES:
        if event.name.startswith("backup."):
            registry[EVENT_TYPES].add(event.name, event)
