"""What the runbook catalog contributes: its step actions (and their events)."""

from __future__ import annotations

from collections.abc import Callable

from app.core.registry import Registry
from app.runbooks.actions import docker

# Each action module's ``register``, in this order.
ACTION_MODULES: tuple[Callable[[Registry], None], ...] = (docker.register,)


def register(registry: Registry) -> None:
    for register_actions in ACTION_MODULES:
        register_actions(registry)
