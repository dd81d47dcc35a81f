"""How each kind of run sums up its steps into a final status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.runs.models import RunKind, RunStatus, Step, StepStatus

Summary = tuple[RunStatus, str | None, str | None, dict[str, Any] | None]
Finalizer = Callable[[list[Step]], Summary]

_FINALIZERS: dict[str, Finalizer] = {}


def register_finalizer(kind: RunKind, finalizer: Finalizer) -> None:
    _FINALIZERS[kind.value] = finalizer


def default_finalizer(steps: list[Step]) -> Summary:
    """Success when every step succeeded or was skipped; otherwise the first failure."""
    for step in steps:
        if step.status == StepStatus.FAILURE:
            detail = f"step {step.position} ({step.name}) failed: {step.error or 'no detail'}"
            timed_out = bool(step.result and step.result.get("timeout"))
            return (
                RunStatus.FAILURE,
                "/problems/timeout" if timed_out else "/problems/step-failed",
                detail,
                None,
            )
    return RunStatus.SUCCESS, None, None, None


def finalize(kind: str, steps: list[Step]) -> Summary:
    _load_kinds()
    return _FINALIZERS.get(kind, default_finalizer)(steps)


def _load_kinds() -> None:
    """Import the modules that register kinds (the worker may not have imported them)."""
    import app.health_checks.plan  # noqa: F401
