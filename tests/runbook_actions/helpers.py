"""A step's context for calling an action's handler directly, with the folders the
file actions may touch set for the test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from app.core.context import AppContext
from app.environments.models import Environment, Service
from app.runs.actions import StepContext

RUN_ID = "01936f3e-8a10-7c3e-9f10-2b4d5e6f7a8b"


class Logged(list[str]):
    """The lines a step logged."""

    async def __call__(self, line: str) -> None:
        self.append(line)


def step_context(
    context: AppContext,
    *,
    log_paths: Sequence[Path] = (),
    cleanup_paths: Sequence[Path] = (),
) -> tuple[StepContext, Logged]:
    runbooks = context.settings.runbooks.model_copy(
        update={
            "log_paths": [str(p) for p in log_paths],
            "cleanup_paths": [str(p) for p in cleanup_paths],
        }
    )
    settings = context.settings.model_copy(update={"runbooks": runbooks})
    logged = Logged()
    return StepContext(replace(context, settings=settings), logged, RUN_ID, 0), logged


async def add_environment(
    context: AppContext,
    name: str = "prod",
    *,
    redis_url: str | None = None,
    health_url: str | None = None,
) -> None:
    """An environment (its Redis set on the column) with one service ``api``."""
    async with context.unit_of_work() as uow:
        uow.session.add(Environment(name=name, redis_url=redis_url))
        await uow.session.flush()
        uow.session.add(
            Service(environment=name, name="api", driver="process", health_url=health_url)
        )
