"""Alembic environment: async engine, batch mode on SQLite, URL from Formula Ops settings."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import JSON
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import app.models  # noqa: F401 - registers every table on Base.metadata
from app.core.db import Base, create_engine
from app.core.settings import Settings

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    given = config.attributes.get("settings")
    return given if isinstance(given, Settings) else Settings()


def _compare_server_default(
    _context: Any,
    _inspected_column: Any,
    metadata_column: Any,
    inspected_default: str | None,
    _metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """A JSON column's default compared by its text (PostgreSQL reflects ``'[]'::json`` and
    has no ``=`` for json to compare it with, SQLite ``'[]'``); any other by Alembic."""
    if isinstance(metadata_column.type, JSON) and None not in (
        inspected_default,
        rendered_metadata_default,
    ):
        inspected = str(inspected_default).removesuffix("::json").strip("'")
        return inspected != str(rendered_metadata_default).strip("'")
    return None


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=_compare_server_default,
    )


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
    await engine.dispose()


def run_migrations_offline() -> None:
    url = _settings().database_url_value
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    asyncio.run(_run_async(create_engine(_settings())))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
