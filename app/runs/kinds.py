"""What a kind of run adds to the engine: how its steps sum up into a final status, and
optional hooks — a claim guard (may this run start now?), whether to run its
compensating (``rollback`` phase) steps, and what its end changes besides the run (and
adds to the event announcing it)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.registry import CatalogKey, Registry
from app.runs.models import RunKind, RunStatus, Step, StepStatus

logger = logging.getLogger(__name__)

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
# True while a queued run waits for another run that enqueues it when it ends.
WaitsTurn = Callable[["AsyncSession", "Run"], Awaitable[bool]]
# Runs in the transaction that ends the run; returns what the run's end event adds to
# its data (the kind's own fields and links, :func:`app.runs.service.finish_announcement`).
FinishHook = Callable[["UnitOfWork", "AppContext", "Run"], Awaitable[dict[str, Any] | None]]
Compensate = Callable[["Run", Ending], bool]


@dataclass(frozen=True)
class KindHooks:
    """What a kind of run adds to the engine (registered under the kind's name in
    :data:`KINDS`); every hook is optional."""

    finalizer: Finalizer | None = None
    claim_guard: ClaimGuard | None = None
    # A queued run that waits its turn behind another run (which enqueues it as it ends)
    # is left alone by the reconciler: enqueueing it again would only have a worker find
    # it blocked, every pass, for every run in the line.
    waits_turn: WaitsTurn | None = None
    on_finish: FinishHook | None = None
    compensate: Compensate | None = None
    # False: the run's end is not announced as ``<kind>.<past tense>`` (the kind's own
    # events, written by its hooks and actions, say what happened).
    announce: bool = True
    # True: the finalizer may end a run ``rolled_back`` (a deployment whose compensating
    # steps undid it); a kind whose rollback-phase steps only tidy up says False.
    rolls_back: bool = False


KINDS: CatalogKey[KindHooks] = CatalogKey("run kind")

# Runs in the transaction that ends a run of any kind, after the kind's finish hook: what
# another domain does about how runs end (incidents open one for a deployment that ended
# in error). A listener that fails is logged and its changes undone; the run still ends.
RunEndedListener = Callable[["UnitOfWork", "AppContext", "Run"], Awaitable[None]]
RUN_ENDED: CatalogKey[RunEndedListener] = CatalogKey("run-ended listener")


DEFAULT_HOOKS = KindHooks()


def hooks(registry: Registry, kind: RunKind | str) -> KindHooks:
    """The hooks a domain registered for ``kind``; a kind nothing registered (a plain
    list of steps) runs with none: every step must succeed (:func:`default_finalizer`)."""
    return registry[KINDS].find(str(kind)) or DEFAULT_HOOKS


async def run_ended(uow: UnitOfWork, context: AppContext, run: Run) -> None:
    """Tell every :data:`RUN_ENDED` listener that ``run`` ended (in its transaction)."""
    for name, listener in context.registry[RUN_ENDED].items():
        try:
            async with uow.session.begin_nested():
                await listener(uow, context, run)
        except Exception:
            logger.exception("run-ended listener %s failed for run %s", name, run.id)


def registered(registry: Registry) -> list[RunKind]:
    """The kinds this installation can run (a domain registered them), in declaration
    order; the others are reserved names."""
    return [kind for kind in RunKind if kind.value in registry[KINDS]]


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


def finalize(hooks: KindHooks, steps: list[Step], ending: Ending | None = None) -> Summary:
    finalizer = hooks.finalizer or default_finalizer
    return finalizer(steps, ending or Ending())
