"""The run engine's database work per run, counted (a statement count is deterministic,
unlike a timing): what a worker executes for a one-step run, from claim to finish."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from app.core.context import AppContext
from app.runs import engine
from app.runs.models import RunKind, RunStatus
from app.runs.service import StepSpec, create_run

# Statements the worker sends for a one-step run, by backend. SQLite counts its BEGINs
# (sent as statements); PostgreSQL's BEGIN is implicit in the driver. Three transactions:
# the claim (UPDATE … RETURNING the run, INSERT run.started, SELECT its steps); the step's
# start (fenced UPDATE, UPDATE step, INSERT step.started); the end (fenced UPDATE …
# RETURNING, UPDATE step, INSERT step.finished + run.finished, INSERT outbox).
ONE_STEP_RUN = {"postgresql": 10, "sqlite": 13}
BEFORE = {"postgresql": 21, "sqlite": 25}  # four transactions, read-backs, one INSERT each


@contextmanager
def counted(context: AppContext) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    event.listen(context.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(context.engine.sync_engine, "before_cursor_execute", count)


async def test_a_one_step_run_takes_the_pinned_number_of_statements(context: AppContext) -> None:
    async with context.unit_of_work() as uow:
        run = await create_run(
            uow,
            context,
            kind=RunKind.MAINTENANCE,
            steps=[StepSpec("pause", "wait", {"seconds": 0})],
            requested_by="tests",
        )
    with counted(context) as statements:
        status = await engine.execute(context, run.id, "worker-1")
    assert status == RunStatus.SUCCESS
    backend = context.engine.dialect.name
    assert len(statements) == ONE_STEP_RUN[backend], statements
    assert len(statements) * 2 <= BEFORE[backend] + 1  # halved (rounded up)
