"""What the runs package contributes: the built-in step actions and the ``run.queued``
event every run announces."""

from __future__ import annotations

from app.core.registry import Registry
from app.outbox.catalog import EVENT_TYPES
from app.runs import events
from app.runs.actions import (
    ACTIONS,
    Action,
    HttpParams,
    ShellParams,
    WaitParams,
    http_check,
    shell,
    wait,
)


def register(registry: Registry) -> None:
    actions = registry[ACTIONS]
    actions.add("http", Action(HttpParams, http_check, idempotent=True))
    actions.add("shell", Action(ShellParams, shell, idempotent=False))
    actions.add("wait", Action(WaitParams, wait, idempotent=True))
    registry[EVENT_TYPES].add(events.RUN_QUEUED.name, events.RUN_QUEUED)
