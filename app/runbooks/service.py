"""Starting a runbook's run (by request or by schedule), and its dry-run plan.

The run is written (queued, with its steps, audit record and event) in the caller's
transaction and enqueued after the commit, as every run is (:mod:`app.runs.service`).
"""

from __future__ import annotations

from typing import Any

from app.audit import service as audit_service
from app.auth.errors import Forbidden
from app.auth.principal import Principal
from app.auth.service import authorize
from app.core.context import AppContext
from app.core.db import UnitOfWork
from app.core.errors import NotFound
from app.environments.service import get_environment
from app.runbooks import plan
from app.runbooks.catalog import Runbook, catalog_of
from app.runbooks.spec import ENVIRONMENT
from app.runs import service as run_service
from app.runs.models import Run, RunKind
from app.runs.service import StepSpec


class RunbookNotFound(NotFound):
    type = "/problems/runbook-not-found"
    title = "Runbook not found"


def get_runbook(context: AppContext, name: str) -> Runbook:
    runbook = catalog_of(context).get(name)
    if runbook is None:
        raise RunbookNotFound(f"No runbook {name!r}")
    return runbook


def check_role(principal: Principal, runbook: Runbook) -> None:
    """403 unless ``principal`` may start ``runbook`` (its declared role)."""
    reason = authorize(principal, runbook.role, environment_scoped=True)
    if reason is not None:
        raise Forbidden(f"runbook {runbook.name}: {reason}")


async def prepare(
    uow_or_session: Any,
    context: AppContext,
    principal: Principal,
    name: str,
    parameters: dict[str, Any],
) -> tuple[Runbook, dict[str, Any], list[StepSpec]]:
    """The runbook, the checked parameters and the validated plan: 404 for an unknown
    runbook or environment (one the caller may not see), 403 below its role, 422 for bad
    parameters or a step its values make invalid."""
    runbook = get_runbook(context, name)
    check_role(principal, runbook)
    values = runbook.check_parameters(parameters)
    session = getattr(uow_or_session, "session", uow_or_session)
    environment = values.get(ENVIRONMENT)
    if environment is not None:
        await get_environment(session, principal, environment)
    elif principal.environment is not None:
        raise Forbidden(
            f"runbook {runbook.name} names no environment; a token limited to "
            f"{principal.environment!r} may not start it"
        )
    planned = run_service.validate_plan(context.registry, plan.steps(runbook, values))
    return runbook, values, planned


def kind_of(runbook: Runbook) -> RunKind:
    return RunKind(runbook.spec.kind)


async def start_run(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    name: str,
    parameters: dict[str, Any],
    *,
    origin: str = "api",
) -> Run:
    """Write the runbook's queued run, its audit record and its event (enqueued once the
    transaction commits)."""
    runbook, values, planned = await prepare(uow, context, principal, name, parameters)
    run = await run_service.create_run(
        uow,
        context,
        kind=kind_of(runbook),
        steps=planned,
        params={"runbook": runbook.name, "parameters": values, "origin": origin},
        requested_by=principal.actor,
        environment=values.get(ENVIRONMENT),
    )
    await audit_service.record(
        uow.session,
        principal,
        action="runbook.run",
        resource_type="run",
        resource_id=run.id,
        summary={"runbook": runbook.name, "parameters": values, "origin": origin},
    )
    return run
