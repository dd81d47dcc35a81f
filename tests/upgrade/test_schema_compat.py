"""Expand/contract as a test: the schema this code migrates to still serves the previous
release. Every table and column the previous release maps exists, and a column it does
not know may be left out of its INSERTs (nullable, or a server default). Also: which
schema a worker accepts (its own head, or a later release's). About 5 s."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from app.core import migrate
from app.core.settings import Settings
from tests.helpers import create_pg_database, drop_pg_database, in_thread
from tests.upgrade.conftest import Release
from tests.upgrade.release import metadata_columns


@pytest.fixture
def migrated(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL database at this code's head; its URL."""
    name = f"formula_ops_compat_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    in_thread(migrate.upgrade, Settings(state_dir=tmp_path, database_url=SecretStr(url)))
    yield url
    drop_pg_database(name)


def schema_columns(url: str) -> dict[str, dict[str, Any]]:
    """table -> column -> (nullable, has a server default), as the database has them."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        inspector = sa.inspect(engine)
        return {
            table: {
                c["name"]: [bool(c["nullable"]), c.get("default") is not None]
                for c in inspector.get_columns(table)
            }
            for table in inspector.get_table_names()
        }
    finally:
        engine.dispose()


def incompatibilities(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    """What in the ``new`` schema would break code mapping the ``old`` tables."""
    found = []
    for table, columns in sorted(old.items()):
        if table not in new:
            found.append(f"table {table} was dropped or renamed")
            continue
        for column, (nullable, _) in sorted(columns.items()):
            if column not in new[table]:
                found.append(f"column {table}.{column} was dropped or renamed")
                continue
            now_nullable, now_default = new[table][column]
            if nullable and not now_nullable and not now_default:
                found.append(f"column {table}.{column} became NOT NULL without a default")
        for column, (now_nullable, now_default) in sorted(new[table].items()):
            if column not in columns and not now_nullable and not now_default:
                found.append(
                    f"new column {table}.{column} is NOT NULL without a server default: "
                    "the previous release's INSERTs leave it out"
                )
    return found


def test_the_previous_release_maps_nothing_the_new_schema_lacks(
    old_release: Release, migrated: str
) -> None:
    old = metadata_columns(old_release.tree)
    new = schema_columns(migrated)
    assert old, "the previous release maps no table"
    assert incompatibilities(old, new) == [], f"previous release {old_release.commit[:12]}"


def test_the_rule_catches_what_breaks_the_previous_release() -> None:
    old = {"environment": {"name": [False, False], "note": [True, False]}, "gone": {}}
    new = {
        "environment": {
            "name": [False, False],
            "note": [False, False],
            "hosts": [False, False],
            "tags": [False, True],
            "extra": [True, False],
        }
    }
    assert incompatibilities(old, new) == [
        "column environment.note became NOT NULL without a default",
        "new column environment.hosts is NOT NULL without a server default: "
        "the previous release's INSERTs leave it out",
        "table gone was dropped or renamed",
    ]


def test_a_worker_runs_on_its_head_or_a_later_releases_schema_never_an_earlier_one() -> None:
    (head,) = migrate.head_revisions()
    assert migrate.usable({head})
    assert migrate.usable({"9999_a_later_release"})
    assert not migrate.usable(set())
    assert not migrate.usable({"0012_backups"})  # behind: migrate first
