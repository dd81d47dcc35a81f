"""What the runbook catalog contributes: the ``maintenance`` and ``playbook`` run kinds
(how a runbook's steps sum up, what their end announces), their events, and the step
actions the catalog's runbooks use."""

from __future__ import annotations

from collections.abc import Callable

from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES
from app.runbooks import events, plan
from app.runbooks.actions import (
    access,
    approval,
    cache,
    children,
    files,
    load,
    notify,
    security,
    sql,
)
from app.runs.kinds import KINDS, KindHooks
from app.runs.models import RunKind

# Each action module's ``register``, in this order.
ACTION_MODULES: tuple[Callable[[Registry], None], ...] = (
    sql.register,
    approval.register,
    notify.register,
    children.register,
    security.register,
    cache.register,
    load.register,
    files.register,
    access.register,
)


def register(registry: Registry) -> None:
    # A runbook's run announces its end as runbook.* (its finish hook writes the event).
    hooks = KindHooks(finalizer=plan.finalize, on_finish=events.on_finish, announce=False)
    registry[KINDS].add(RunKind.MAINTENANCE.value, hooks)
    registry[KINDS].add(RunKind.PLAYBOOK.value, hooks)
    for event in events.TYPES:
        registry[EVENT_TYPES].add(event.name, event)
    for register_actions in ACTION_MODULES:
        register_actions(registry)
