"""Deployments as clients see them."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.context import AppContext
from app.core.paths import V1
from app.core.redaction import redact_text
from app.deployments import service
from app.deployments.models import Deployment, DeploymentTarget
from app.deployments.problems import TITLES
from app.deployments.schemas import (
    DeployedService,
    DeploymentDryRun,
    DeploymentLinks,
    DeploymentOut,
    ServiceVersion,
)
from app.runs.models import Run, RunStatus
from app.runs.presenters import plan_view, step_out
from app.runs.schemas import FAILURE_TITLES, PlannedStep, RunFailure


def location(deployment_id: str) -> str:
    return f"{V1}/deployments/{deployment_id}"


def deployment_out(
    run: Run,
    deployment: Deployment,
    targets: list[DeploymentTarget],
    queue_position: int | None,
) -> DeploymentOut:
    failure = (
        RunFailure(
            type=run.failure_type,
            title=TITLES.get(run.failure_type)
            or FAILURE_TITLES.get(run.failure_type, "Deployment did not succeed"),
            detail=redact_text(run.failure_detail) if run.failure_detail else None,
        )
        if run.failure_type
        else None
    )
    return DeploymentOut(
        id=run.id,
        kind=deployment.kind,
        environment=deployment.environment,
        services=[
            DeployedService(
                name=t.service,
                version=t.version,
                previous_version=t.previous_version,
                changed=t.touched,
            )
            for t in targets
        ],
        ref=deployment.ref,
        description=deployment.description,
        checklist=list(deployment.checklist),
        required_checklist=list(deployment.required_checklist),
        backup=deployment.backup,
        auto_rollback=deployment.auto_rollback,
        rollback_of=deployment.rollback_of,
        status=RunStatus(run.status),
        queue_position=queue_position if run.status == RunStatus.QUEUED else None,
        failure=failure,
        requested_by=deployment.requested_by,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        cancel_requested=run.cancel_requested_at is not None,
        steps=[step_out(s) for s in sorted(run.steps, key=lambda s: s.position)],
        links=DeploymentLinks(
            self=location(run.id),
            run=f"{V1}/runs/{run.id}",
            events=f"{V1}/runs/{run.id}/events",
            evidence=f"{location(run.id)}/evidence",
        ),
    )


async def deployments_out(session: AsyncSession, runs: Sequence[Run]) -> list[DeploymentOut]:
    deployments, targets, positions = await service.details(session, runs)
    return [
        deployment_out(r, deployments[r.id], targets[r.id], positions.get(r.id))
        for r in runs
        if r.id in deployments
    ]


def renderer(context: AppContext):  # type: ignore[no-untyped-def]
    """The ``Prefer: wait`` answer of a deployment (for :func:`app.runs.http.created`)."""

    async def render(run: Run, status: int, where: str, headers: dict[str, str]) -> JSONResponse:
        async with context.sessionmaker() as session:
            (out,) = await deployments_out(session, [run])
        return JSONResponse(
            out.model_dump(mode="json"), status_code=status, headers={"Location": where, **headers}
        )

    return render


def dry_run_out(planned: service.Planned, ahead: int, *, reveal: bool) -> DeploymentDryRun:
    """What a deployment would do; ``reveal``: its step parameters with their secrets
    (admins, who wrote the configuration)."""
    return DeploymentDryRun(
        environment=planned.environment.name,
        services=[ServiceVersion(name=t.service.name, version=t.version) for t in planned.targets],
        checklist_missing=planned.checklist_missing,
        queue_position=ahead,
        steps=[PlannedStep(**step) for step in plan_view(planned.steps, reveal=reveal)],
    )
