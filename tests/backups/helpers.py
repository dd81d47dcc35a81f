"""What the backups tests share: tokens, a SQLite database to back up, an environment
pointing at it, and emptying the backups' tables (the session's ``_clean`` predates
them)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import delete, select

from app.audit.models import AuditEvent
from app.auth.roles import Role
from app.backups.models import Backup, Restore
from app.core.context import AppContext
from tests.factories import IssuedToken, issue_token

WAIT = {"Prefer": "wait=60"}


@pytest_asyncio.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


@pytest_asyncio.fixture
async def viewer(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.VIEWER)


@pytest_asyncio.fixture
async def no_backups(context: AppContext) -> None:
    async with context.unit_of_work() as uow:
        await uow.session.execute(delete(Restore))
        await uow.session.execute(delete(Backup))


def make_sqlite(path: Path, rows: int = 50, blob_bytes: int = 0) -> Path:
    """A SQLite database with two tables (``orders`` with ``rows`` rows, each with a
    random blob of ``blob_bytes``, and ``customers``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT, blob BLOB)")
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany(
            "INSERT INTO orders (note, blob) VALUES (?, ?)",
            ((f"order {n}", os.urandom(blob_bytes) if blob_bytes else None) for n in range(rows)),
        )
        conn.executemany("INSERT INTO customers (name) VALUES (?)", ((f"c{n}",) for n in range(7)))
        conn.commit()
    finally:
        conn.close()
    return path


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


async def put_environment(
    client: httpx.AsyncClient, admin: IssuedToken, name: str, **body: Any
) -> dict[str, Any]:
    response = await client.put(f"/v1/environments/{name}", json=body, headers=admin.headers)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def audit_actions(context: AppContext, resource_id: str) -> list[str]:
    async with context.sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.resource_id == resource_id)
            .order_by(AuditEvent.created_at)
        )
        return list(rows)


def flip_byte(path: Path, offset: int) -> None:
    """Change one byte of ``path`` (a stored backup that rotted)."""
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))
