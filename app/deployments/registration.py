"""What the deployments contribute: the ``deployment`` and ``rollback`` run kinds (their
claim guard, finalizer, compensation and end hook), the step actions of their plan, the
hold of their unfinished deployments on environments and services, and their events."""

from __future__ import annotations

from app.core.registry import Registry
from app.deployments import actions, events, lifecycle, plan
from app.environments.service import HOLDS
from app.outbox.catalog import EVENT_TYPES
from app.runs.actions import ACTIONS, Action
from app.runs.kinds import KINDS, KindHooks
from app.runs.models import RunKind


def register(registry: Registry) -> None:
    hooks = KindHooks(
        finalizer=plan.finalize,
        claim_guard=lifecycle.claim_guard,
        waits_turn=lifecycle.waits_turn,
        on_finish=lifecycle.on_finish,
        compensate=plan.compensate,
        rolls_back=True,
    )
    registry[KINDS].add(RunKind.DEPLOYMENT.value, hooks)
    registry[KINDS].add(RunKind.ROLLBACK.value, hooks)
    registry[HOLDS].add("deployments", lifecycle.holds)
    steps = registry[ACTIONS]
    steps.add("checklist", Action(actions.ChecklistParams, actions.checklist, idempotent=True))
    steps.add(
        "backup_database",
        Action(actions.BackupParams, actions.backup_database, idempotent=True),
    )
    steps.add("pull", Action(actions.VersionParams, actions.pull, idempotent=True))
    steps.add("deploy", Action(actions.DeployParams, actions.deploy, idempotent=True))
    steps.add("verify", Action(actions.VerifyParams, actions.verify, idempotent=True))
    steps.add(
        "rollback_service",
        Action(actions.RollbackParams, actions.rollback_service, idempotent=True),
    )
    for event in events.TYPES:
        registry[EVENT_TYPES].add(event.name, event)
