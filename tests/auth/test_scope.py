"""The one rule of what a caller may read (``app.auth.scope``), on its own; the routes
that use it are tested in their domains (a scoped token sees its environment only)."""

from __future__ import annotations

from sqlalchemy import select

from app.auth.principal import Principal
from app.auth.roles import Role
from app.auth.scope import may_read, readable
from app.environments.models import Environment
from app.runs.models import Run

UNRESTRICTED = Principal(token_id="a", name="a", role=Role.VIEWER)
STAGING_ONLY = Principal(token_id="b", name="b", role=Role.VIEWER, environment="staging")


def _where(principal: Principal | None) -> str:
    statement = readable(select(Run), Run.environment, principal)
    compiled = statement.compile(compile_kwargs={"literal_binds": True})
    return str(compiled).partition("WHERE")[2].strip()


def test_a_restricted_token_reads_the_rows_of_its_environment_only() -> None:
    assert _where(STAGING_ONLY) == "run.environment = 'staging'"


def test_an_unrestricted_token_and_a_system_actor_read_every_row() -> None:
    assert _where(UNRESTRICTED) == ""
    assert _where(None) == ""


def test_the_filter_applies_to_the_column_it_is_given() -> None:
    statement = readable(select(Environment), Environment.name, STAGING_ONLY)
    compiled = str(statement.compile(compile_kwargs={"literal_binds": True}))
    assert compiled.endswith("WHERE environment.name = 'staging'")


def test_one_row() -> None:
    assert may_read(STAGING_ONLY, "staging")
    assert not may_read(STAGING_ONLY, "production")
    assert not may_read(STAGING_ONLY, None)
    assert may_read(UNRESTRICTED, "production")
    assert may_read(None, "production")
