"""What the run engine asks of deployments: may this one start now (one active
deployment per environment + service, in request order), and what its end changes
(service versions, pins, the evidence record, the next deployment in line)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.audit import service as audit_service
from app.audit.models import Outcome
from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.core.paths import V1
from app.core.redaction import redact_value
from app.deployments import events
from app.deployments.models import Deployment, DeploymentTarget, TargetState
from app.environments.models import Pin, Service
from app.maintenances import service as maintenance_service
from app.outbox.service import add_event
from app.runs import service as run_service
from app.runs.models import Phase, Run, RunKind, RunStatus, Step, StepStatus
from app.runs.presenters import step_out


async def holds(session: AsyncSession, environment: str, service: str | None) -> bool:
    """Whether a queued or running deployment changes ``environment`` (only ``service``,
    when one is named): it may not be deleted then (:class:`app.environments.service.Hold`)."""
    statement = select(func.count()).where(
        DeploymentTarget.environment == environment,
        DeploymentTarget.state != TargetState.DONE.value,
    )
    if service is not None:
        statement = statement.where(DeploymentTarget.service == service)
    return bool(await session.scalar(statement))


async def _blocked(session: AsyncSession, target: DeploymentTarget, frozen: bool) -> bool:
    """An earlier deployment of the same environment + service is unfinished (while the
    environment is ``frozen``, a rollback does not wait for the deployments the freeze
    holds back: only for an active one or an earlier rollback)."""
    statement = select(DeploymentTarget.id)
    if frozen:
        statement = statement.join(
            Deployment, Deployment.id == DeploymentTarget.deployment_id
        ).where(
            or_(
                DeploymentTarget.state == TargetState.ACTIVE.value,
                Deployment.kind == RunKind.ROLLBACK.value,
            )
        )
    ahead = await session.scalar(
        statement.where(
            DeploymentTarget.environment == target.environment,
            DeploymentTarget.service == target.service,
            DeploymentTarget.state != TargetState.DONE.value,
            DeploymentTarget.deployment_id != target.deployment_id,
            or_(
                DeploymentTarget.created_at < target.created_at,
                and_(
                    DeploymentTarget.created_at == target.created_at,
                    DeploymentTarget.id < target.id,
                ),
            ),
        ).limit(1)
    )
    return ahead is not None


async def claim_guard(session: AsyncSession, run: Run) -> bool:
    """True when no earlier deployment of one of its services is unfinished and, for a
    deployment (never a rollback), no maintenance window freezes its environment now;
    then its targets turn ``active``, and the partial unique index refuses a second
    active one (an IntegrityError the engine takes as "not now").

    A deployment accepted before a freeze began waits ``queued`` until the window ends:
    its job ends here, and the run engine's reconciler enqueues a queued run again once
    it has waited ``reconcile_stale_after_seconds`` (and again after each refusal), so
    it starts at most that long after the window ends."""
    frozen = bool(
        run.environment
        and await maintenance_service.freezing(session, run.environment, utcnow()) is not None
    )
    if frozen and run.kind != RunKind.ROLLBACK.value:
        return False
    targets = list(
        await session.scalars(
            select(DeploymentTarget)
            .where(DeploymentTarget.deployment_id == run.id)
            .order_by(DeploymentTarget.position)
        )
    )
    for target in targets:
        if await _blocked(session, target, frozen):
            return False
    await session.execute(
        update(DeploymentTarget)
        .where(DeploymentTarget.deployment_id == run.id)
        .values(state=TargetState.ACTIVE.value)
    )
    await session.flush()
    if run.lease_epoch == 1:
        ref = await session.scalar(select(Deployment.ref).where(Deployment.id == run.id))
        await add_event(
            session,
            "deployment.started",
            events.data(run.id, run.kind, run.environment, run.status, targets, ref),
        )
    return True


async def waits_turn(session: AsyncSession, run: Run) -> bool:
    """True while an earlier deployment of one of its services is unfinished (the claim
    guard's test, with the same freeze rule): that one enqueues it as it ends
    (:func:`_start_next`), so the reconciler leaves it queued. The first in line never
    waits its turn (a freeze alone holds it: the reconciler enqueues it again)."""
    frozen = bool(
        run.environment
        and await maintenance_service.freezing(session, run.environment, utcnow()) is not None
    )
    targets = await session.scalars(
        select(DeploymentTarget).where(DeploymentTarget.deployment_id == run.id)
    )
    for target in targets:
        if await _blocked(session, target, frozen):
            return True
    return False


def _positions_statement() -> Any:
    ahead = aliased(DeploymentTarget)
    mine = aliased(DeploymentTarget)
    return (
        select(mine.deployment_id, func.count(func.distinct(ahead.deployment_id)))
        .join(
            ahead,
            and_(
                ahead.environment == mine.environment,
                ahead.service == mine.service,
                ahead.state != TargetState.DONE.value,
                ahead.deployment_id != mine.deployment_id,
                or_(
                    ahead.created_at < mine.created_at,
                    and_(ahead.created_at == mine.created_at, ahead.id < mine.id),
                ),
            ),
        )
        .where(
            mine.deployment_id.in_(bindparam("ids", expanding=True)),
            mine.state != TargetState.DONE.value,
        )
        .group_by(mine.deployment_id)
    )


_POSITIONS = _positions_statement()  # built once: only the ids change


async def queue_positions(session: AsyncSession, deployment_ids: list[str]) -> dict[str, int]:
    """How many unfinished deployments are ahead of each (0: it may run now)."""
    if not deployment_ids:
        return {}
    rows = await session.execute(_POSITIONS, {"ids": deployment_ids})
    return {deployment_id: int(count) for deployment_id, count in rows}


async def on_finish(uow: UnitOfWork, context: AppContext, run: Run) -> dict[str, Any] | None:
    """Finish the deployment's targets, services and pins, write its evidence and audit
    record, start the next deployment in line; returns what the end event adds."""
    session = uow.session
    deployment = await session.get(Deployment, run.id)
    if deployment is None:
        return None
    targets = list(
        await session.scalars(
            select(DeploymentTarget)
            .where(DeploymentTarget.deployment_id == run.id)
            .order_by(DeploymentTarget.position)
        )
    )
    steps = list(
        await session.scalars(select(Step).where(Step.run_id == run.id).order_by(Step.position))
    )
    status = RunStatus(run.status)
    rolled_back = any(
        s.phase == Phase.ROLLBACK and s.status in (StepStatus.SUCCESS, StepStatus.FAILURE)
        for s in steps
    )
    pins: list[dict[str, str]] = []
    restored: list[dict[str, str | None]] = []
    for target in targets:
        target.state = TargetState.DONE.value
        values: dict[str, Any] = {"last_deployment_id": run.id, "updated_at": utcnow()}
        if status == RunStatus.SUCCESS:
            values["current_version"] = target.version
        await session.execute(
            update(Service)
            .where(Service.environment == target.environment, Service.name == target.service)
            .values(**values)
        )
        if rolled_back and target.touched:
            restored.append(
                {"name": target.service, "from": target.version, "to": target.previous_version}
            )
        if status in (RunStatus.ROLLED_BACK, RunStatus.ERROR) and rolled_back and target.touched:
            reason = f"rolled back automatically by deployment {run.id}"
            if await pin(
                session, target.environment, target.service, target.version, reason, run.id
            ):
                pins.append({"service": target.service, "version": target.version})
    await session.flush()
    if deployment.evidence is None:
        deployment.evidence = evidence(deployment, run, targets, steps, pins)
    await _start_next(uow, context, targets)
    # Last: the audit row sums up what this transaction changed.
    await _audit_finish(session, run, targets, restored, pins)
    return events.ended(run.id, targets, deployment.ref)


async def _audit_finish(
    session: AsyncSession,
    run: Run,
    targets: list[DeploymentTarget],
    restored: list[dict[str, str | None]],
    pins: list[dict[str, str]],
) -> None:
    """The worker's own changes, with the run as actor: the automatic rollback, the pins
    it created, and the deployment's outcome."""
    actor = audit_service.RunActor(run.id, run.requested_by)
    status = RunStatus(run.status)
    cause = (run.result or {}).get("cause")
    if restored:
        await audit_service.record(
            session,
            actor,
            action="deployment.auto_rollback",
            outcome=Outcome.FAILED if status == RunStatus.ERROR else Outcome.SUCCESS,
            resource_type="deployment",
            resource_id=run.id,
            summary={"environment": run.environment, "services": restored, "cause": cause},
        )
    for pinned in pins:
        await audit_service.record(
            session,
            actor,
            action="pin.create",
            resource_type="pin",
            resource_id=f"{run.environment}/{pinned['service']}/{pinned['version']}",
            summary={"reason": "automatic rollback", "deployment_id": run.id},
        )
    await audit_service.record(
        session,
        actor,
        action=f"deployment.{run_service.past_tense(status)}",
        outcome=Outcome.SUCCESS if status == RunStatus.SUCCESS else Outcome.FAILED,
        resource_type="deployment",
        resource_id=run.id,
        summary={
            "kind": run.kind,
            "environment": run.environment,
            "status": status.value,
            "services": [{"name": t.service, "version": t.version} for t in targets],
            "failure_type": run.failure_type,
        },
    )


async def pin(
    session: AsyncSession,
    environment: str,
    service: str,
    version: str,
    reason: str,
    deployment_id: str | None,
    created_by: str = "formula-ops",
) -> bool:
    """Block ``version`` of the service; False when it was already pinned."""
    existing = await session.scalar(
        select(Pin.id).where(
            Pin.environment == environment, Pin.service == service, Pin.version == version
        )
    )
    if existing is not None:
        return False
    session.add(
        Pin(
            environment=environment,
            service=service,
            version=version,
            reason=reason,
            deployment_id=deployment_id,
            created_by=created_by,
        )
    )
    await session.flush()
    return True


async def _start_next(
    uow: UnitOfWork, context: AppContext, targets: list[DeploymentTarget]
) -> None:
    """Enqueue the next queued deployment of each service this one held (its earlier job
    found it blocked and ended)."""
    seen: set[str] = set()
    for target in targets:
        next_id = await uow.session.scalar(
            select(DeploymentTarget.deployment_id)
            .join(Run, Run.id == DeploymentTarget.deployment_id)
            .where(
                DeploymentTarget.environment == target.environment,
                DeploymentTarget.service == target.service,
                DeploymentTarget.state == TargetState.QUEUED.value,
                Run.status == RunStatus.QUEUED.value,
            )
            .order_by(DeploymentTarget.created_at, DeploymentTarget.id)
            .limit(1)
        )
        if next_id is None or next_id in seen:
            continue
        seen.add(next_id)
        count = await uow.session.scalar(
            update(Run)
            .where(Run.id == next_id, Run.status == RunStatus.QUEUED.value)
            .values(enqueue_count=Run.enqueue_count + 1, updated_at=utcnow())
            .returning(Run.enqueue_count)
        )
        if count is not None:
            run_service.enqueue_after_commit(uow, context.queue, next_id, int(count))


def _backup(main: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pre-deploy backup: what its step stored (null when none was planned)."""
    for step in main:
        if step["action"] == "backup_database":
            data = step.get("result") or {}
            return {
                "status": step["status"],
                "backup_id": data.get("backup_id"),
                "storage_url": data.get("storage_url"),
                "size_bytes": data.get("size_bytes"),
                "sha256": data.get("sha256"),
                "link": f"{V1}/backups/{data['backup_id']}" if data.get("backup_id") else None,
            }
    return None


def evidence(
    deployment: Deployment,
    run: Run,
    targets: list[DeploymentTarget],
    steps: list[Step],
    pins: list[dict[str, str]],
) -> dict[str, Any]:
    """The immutable record of a finished deployment, with a digest of its content."""
    step_records = [step_out(s).model_dump(mode="json") for s in steps]
    main = [s for s in step_records if s["phase"] == Phase.MAIN]
    record: dict[str, Any] = {
        "deployment_id": deployment.id,
        "kind": deployment.kind,
        "environment": deployment.environment,
        "request": deployment.request,
        "requested_by": deployment.requested_by,
        "requested_at": deployment.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "status": run.status,
        "failure": (
            {"type": run.failure_type, "detail": run.failure_detail} if run.failure_type else None
        ),
        "services": [
            {
                "name": t.service,
                "version": t.version,
                "previous_version": t.previous_version,
                "changed": t.touched,
            }
            for t in targets
        ],
        "checklist": {
            "answers": deployment.checklist,
            "required": deployment.required_checklist,
            "missing": [i for i in deployment.required_checklist if i not in deployment.checklist],
        },
        "steps": step_records,
        "backup": _backup(main),
        "health": [s for s in main if s["action"] == "verify"],
        "smoke_tests": [s for s in main if s["name"].startswith("smoke ")],
        "rollback": {
            "automatic": deployment.auto_rollback,
            "triggered": any(
                s["phase"] == Phase.ROLLBACK
                and s["status"] in (StepStatus.SUCCESS, StepStatus.FAILURE)
                for s in step_records
            ),
            "reason": (run.result or {}).get("cause"),
            "steps": [s for s in step_records if s["phase"] == Phase.ROLLBACK],
            "pins_created": pins,
        },
    }
    record = redact_value(record)  # kept for good: no secret goes into it
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    record["sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    return record
