"""A step that starts a run of another kind starts it once: resumed (its worker died),
it follows the run it started instead of starting a second one."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.core.context import AppContext
from app.runbooks.actions import children
from app.runs.actions import StepContext
from app.runs.models import Run, RunKind, StepStatus


@pytest.mark.usefixtures("worker")
async def test_a_resumed_step_follows_the_child_it_started(context: AppContext) -> None:
    lines: list[str] = []

    async def log(line: str) -> None:
        lines.append(line)

    ctx = StepContext(context, log, run_id="parent-run", position=3)
    params = children.HealthCheckParams(wait_seconds=60)
    first = await children.health_check(params, ctx)
    again = await children.health_check(params, ctx)
    assert first.data["run_id"] == again.data["run_id"]
    assert first.status == again.status
    assert first.status in (StepStatus.SUCCESS, StepStatus.FAILURE)
    assert lines[0].startswith("started health_check")
    assert lines[1].startswith("following the health_check")
    async with context.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Run).where(Run.kind == RunKind.HEALTH_CHECK.value)
        )
    assert count == 1
    other = await children.health_check(params, StepContext(context, log, "parent-run", 4))
    assert other.data["run_id"] != first.data["run_id"]


async def test_a_refused_deployment_fails_the_step_with_the_reason(context: AppContext) -> None:
    async def log(line: str) -> None:
        return None

    outcome = await children.deployment(
        children.DeploymentParams(environment="nowhere", service="api", version="1.0.0"),
        StepContext(context, log, "parent-run", 0),
    )
    assert outcome.status == StepStatus.FAILURE
    assert "refused" in (outcome.error or "")
    assert "nowhere" in (outcome.error or "")
