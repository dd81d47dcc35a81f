"""Tests of the runbook catalog's step actions (``app/runbooks/actions``): each handler
called with a real :class:`~app.runs.actions.StepContext` on the real database, Redis
and loopback servers, and runs of them executed by a real worker.

Fixtures here: a scratch PostgreSQL database of the test's own (never another
database's sessions) and environments pointing at it; more helpers in ``helpers.py``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from app.core.context import AppContext
from app.environments.models import Environment
from app.runs import service as run_service
from app.runs.models import Run, RunKind
from app.runs.service import StepSpec
from tests.helpers import create_pg_database, drop_pg_database


@pytest.fixture
def scratch_pg() -> Iterator[str]:
    """A new PostgreSQL database with a ``canary`` table of two rows; dropped after."""
    name = f"fops_sql_{uuid.uuid4().hex[:12]}"
    url = create_pg_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE canary (id integer PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO canary VALUES (1, 'alpha'), (2, 'beta')")
    yield url
    drop_pg_database(name)


def canary_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute("SELECT id, name FROM canary ORDER BY id").fetchall())


async def add_environment(context: AppContext, name: str, database_url: str) -> None:
    async with context.unit_of_work() as uow:
        uow.session.add(Environment(name=name, database_url=database_url))


async def create(
    context: AppContext,
    steps: list[StepSpec],
    *,
    requested_by: str = "tests",
    environment: str | None = None,
    params: dict[str, Any] | None = None,
) -> str:
    async with context.unit_of_work() as uow:
        run = await run_service.create_run(
            uow,
            context,
            kind=RunKind.PLAYBOOK,
            steps=steps,
            requested_by=requested_by,
            environment=environment,
            params=params,
        )
    return run.id


async def read(context: AppContext, run_id: str) -> Run:
    async with context.sessionmaker() as session:
        return await run_service.get_run(session, run_id, None)
