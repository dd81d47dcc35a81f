"""What a kind of run adds to the engine: how its steps sum up into a final status, and
optional hooks — a claim guard (may this run start now?), whether to run its
compensating (``rollback`` phase) steps, and what its end changes besides the run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.runs.models import RunKind, RunStatus, Step, StepStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.core.context import AppContext
    from app.core.db import UnitOfWork
    from app.runs.models import Run

Summary = tuple[RunStatus, str | None, str | None, dict[str, Any] | None]


@dataclass(frozen=True)
class Ending:
    """How the forward (``main``) steps ended."""

    cancelled: bool = False
    stopped_at: Step | None = None  # the step that failed and stopped the run
    compensated: bool = False  # the rollback-phase steps ran


Finalizer = Callable[[list[Step], Ending], Summary]
# Runs in the claim's transaction; False leaves the run queued (it is enqueued again
# when what blocks it ends).
ClaimGuard = Callable[["AsyncSession", "Run"], Awaitable[bool]]
# Runs in the transaction that ends the run.
FinishHook = Callable[["UnitOfWork", "AppContext", "Run"], Awaitable[None]]
Compensate = Callable[["Run", Ending], bool]


@dataclass
class KindHooks:
    finalizer: Finalizer | None = None
    claim_guard: ClaimGuard | None = None
    on_finish: FinishHook | None = None
    compensate: Compensate | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_KINDS: dict[str, KindHooks] = {}


def hooks(kind: RunKind | str) -> KindHooks:
    _load_kinds()
    return _KINDS.get(str(kind), KindHooks())


def registered() -> list[RunKind]:
    """The kinds this installation can run (a module registered them), in declaration
    order; the others are reserved names."""
    _load_kinds()
    return [kind for kind in RunKind if kind.value in _KINDS]


def register_finalizer(kind: RunKind, finalizer: Finalizer) -> None:
    _KINDS.setdefault(kind.value, KindHooks()).finalizer = finalizer


def register_hooks(
    kind: RunKind,
    *,
    claim_guard: ClaimGuard | None = None,
    on_finish: FinishHook | None = None,
    compensate: Compensate | None = None,
) -> None:
    entry = _KINDS.setdefault(kind.value, KindHooks())
    entry.claim_guard = claim_guard
    entry.on_finish = on_finish
    entry.compensate = compensate


def default_finalizer(steps: list[Step], ending: Ending) -> Summary:
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


def finalize(kind: str, steps: list[Step], ending: Ending | None = None) -> Summary:
    finalizer = hooks(kind).finalizer or default_finalizer
    return finalizer(steps, ending or Ending())


_loaded = False


def _load_kinds() -> None:
    """Import the modules that register kinds (the worker may not have imported them)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import app.deployments.plan
    import app.health_checks.plan  # noqa: F401
