"""The run-ended listener on its own: which runs open an incident, that the setting
turns it off, and that a second bad run of the same services updates the open incident.
The runs are rows as the engine leaves them; the listener is reached through the run
engine's catalog (``kinds.run_ended``), as the engine calls it."""

from __future__ import annotations

import dataclasses

from sqlalchemy import func, select

from app.core.context import AppContext
from app.core.db import insert_rows
from app.incidents.models import Incident
from app.runs import kinds
from app.runs.models import Run
from tests.incidents.conftest import make_component


async def _end(context: AppContext, kind: str, status: str, environment: str = "prod") -> None:
    run = Run(kind=kind, status=status, environment=environment, requested_by="token:t1")
    run.failure_type = "/problems/step-failed"
    run.failure_detail = "verify failed"
    async with context.unit_of_work() as uow:
        await insert_rows(uow.session, [run])
        await kinds.run_ended(uow, context, run)


async def _incidents(context: AppContext) -> list[Incident]:
    async with context.sessionmaker() as session:
        return list(await session.scalars(select(Incident).order_by(Incident.created_at)))


async def test_which_runs_open_an_incident(context: AppContext) -> None:
    await _end(context, "deployment", "success")
    await _end(context, "deployment", "rolled_back")
    await _end(context, "deployment", "failure")
    await _end(context, "health_check", "error")
    await _end(context, "backup_verification", "success")
    assert await _incidents(context) == []

    await _end(context, "backup_verification", "failure")
    (backup,) = await _incidents(context)
    assert backup.source == "backup"
    assert backup.severity == "P2"

    await _end(context, "deployment", "error", environment="staging")
    await _end(context, "deployment", "error", environment="staging")  # the same services
    backup_again, deploy = await _incidents(context)
    assert backup_again.id == backup.id
    assert deploy.source == "deployment"
    async with context.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(Incident))
    assert count == 2


async def test_the_setting_turns_it_off_and_sets_the_severity(context: AppContext) -> None:
    await make_component(context, "Backend API", services=["prod/backend"])
    policy = context.settings.incidents.model_copy(update={"auto_open": False})
    off = dataclasses.replace(
        context, settings=context.settings.model_copy(update={"incidents": policy})
    )
    await _end(off, "deployment", "error")
    assert await _incidents(context) == []
    policy = context.settings.incidents.model_copy(update={"auto_open_severity": "P1"})
    p1 = dataclasses.replace(
        context, settings=context.settings.model_copy(update={"incidents": policy})
    )
    await _end(p1, "deployment", "error")
    (incident,) = await _incidents(context)
    assert incident.severity == "P1"
