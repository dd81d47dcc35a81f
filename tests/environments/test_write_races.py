"""Create-or-replace requests racing each other answer 409 or their result, never 500.

On PostgreSQL the race is forced with what the database gives: the test holds a table
lock that lets both requests read "no such row" but keeps their inserts waiting, and
releases it once both wait. On SQLite write transactions are serial, so the same
requests simply follow one another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import func, select, text

from app.audit.models import AuditEvent
from app.core.context import AppContext
from app.core.deps import UnitOfWorkDep
from app.core.errors import PROBLEM_MEDIA_TYPE
from app.environments.models import Environment, Service
from tests.factories import IssuedToken

WAIT_SECONDS = 60  # a bound for a lock wait to show up, not a speed expectation


@asynccontextmanager
async def table_locked(context: AppContext, table: str) -> AsyncIterator[None]:
    """On PostgreSQL, ``table`` in SHARE mode: reads and ``FOR UPDATE``/``FOR SHARE`` go
    on, inserts, updates and deletes wait until the block ends. Nothing on SQLite."""
    if context.engine.dialect.name != "postgresql":
        yield
        return
    async with context.engine.connect() as connection, connection.begin():
        await connection.execute(text(f"LOCK TABLE {table} IN SHARE MODE"))
        yield


async def lock_waiters(context: AppContext, statement: str) -> int:
    """Sessions of this database waiting for a lock while running ``statement...``."""
    async with context.engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query ILIKE :statement"
            ),
            {"statement": f"{statement}%"},
        )
    return int(count or 0)


async def until_waiting(context: AppContext, statement: str, count: int) -> None:
    if context.engine.dialect.name != "postgresql":
        return
    deadline = time.monotonic() + WAIT_SECONDS
    while await lock_waiters(context, statement) < count:
        assert time.monotonic() < deadline, f"{count} x {statement!r} never waited on the lock"
        await asyncio.sleep(0.02)


def start(request: Awaitable[httpx.Response]) -> asyncio.Task[httpx.Response]:
    async def run() -> httpx.Response:
        return await request

    return asyncio.ensure_future(run())


def assert_conflict_or(response: httpx.Response, *ok: int) -> None:
    if response.status_code in ok:
        return
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json()["type"] == "/problems/concurrent-change"


async def count(context: AppContext, statement: Any) -> int:
    async with context.sessionmaker() as session:
        return int(await session.scalar(statement) or 0)


class TestConcurrentCreates:
    async def test_two_puts_of_a_new_environment(
        self, context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, backend: str
    ) -> None:
        created = select(func.count()).where(
            AuditEvent.action == "environment.create",
            AuditEvent.resource_id == "race",
            AuditEvent.outcome == "success",
        )
        audited = await count(context, created)  # the audit trail outlives each test
        async with table_locked(context, "environment"):
            racing = [
                start(
                    client.put(
                        "/v1/environments/race",
                        json={"description": description},
                        headers=admin.headers,
                    )
                )
                for description in ("first", "second")
            ]
            await until_waiting(context, "INSERT INTO environment", 2)
        responses = await asyncio.gather(*racing)
        statuses = sorted(r.status_code for r in responses)
        # PostgreSQL: both read "none" and insert; the second insert finds the key taken.
        assert statuses == ([201, 409] if backend == "postgres" else [200, 201]), statuses
        for response in responses:
            assert_conflict_or(response, 200, 201)
        assert await count(context, select(func.count()).select_from(Environment)) == 1
        assert await count(context, created) == audited + 1
        # The loser reads again and retries: a plain replace.
        retry = await client.put(
            "/v1/environments/race", json={"description": "again"}, headers=admin.headers
        )
        assert retry.status_code == 200, retry.text

    async def test_put_and_post_of_the_same_new_environment(
        self, context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        async with table_locked(context, "environment"):
            racing = [
                start(client.put("/v1/environments/race", json={}, headers=admin.headers)),
                start(
                    client.post("/v1/environments", json={"name": "race"}, headers=admin.headers)
                ),
            ]
            await until_waiting(context, "INSERT INTO environment", 2)
        responses = await asyncio.gather(*racing)
        assert 500 not in [r.status_code for r in responses]
        assert [r.status_code for r in responses].count(201) == 1, [r.text for r in responses]
        for response in responses:
            if response.status_code != 201:
                assert response.status_code in (200, 409), response.text
        assert await count(context, select(func.count()).select_from(Environment)) == 1

    async def test_two_puts_of_a_new_service(
        self, context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, backend: str
    ) -> None:
        response = await client.put("/v1/environments/staging", json={}, headers=admin.headers)
        assert response.status_code == 201, response.text
        body = {"driver": "process", "config": {"command": ["true"]}}
        async with table_locked(context, "service"):
            racing = [
                start(
                    client.put(
                        "/v1/environments/staging/services/web", json=body, headers=admin.headers
                    )
                )
                for _ in range(2)
            ]
            await until_waiting(context, "INSERT INTO service", 2)
        responses = await asyncio.gather(*racing)
        statuses = sorted(r.status_code for r in responses)
        assert statuses == ([201, 409] if backend == "postgres" else [200, 201]), statuses
        for response in responses:
            assert_conflict_or(response, 200, 201)
        assert await count(context, select(func.count()).select_from(Service)) == 1

    async def test_put_service_while_its_environment_is_deleted(
        self, context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, backend: str
    ) -> None:
        """The delete holds the environment row; the PUT waits for it and then finds no
        environment (404), instead of inserting a service whose foreign key breaks."""
        response = await client.put("/v1/environments/staging", json={}, headers=admin.headers)
        assert response.status_code == 201, response.text
        body = {"driver": "process", "config": {"command": ["true"]}}
        async with table_locked(context, "service_pin"):  # the delete stops there, row locked
            deleting = start(client.delete("/v1/environments/staging", headers=admin.headers))
            await until_waiting(context, "DELETE FROM service_pin", 1)
            putting = start(
                client.put(
                    "/v1/environments/staging/services/web", json=body, headers=admin.headers
                )
            )
            await until_waiting(context, "", 2)  # the PUT waits for the environment too
        deleted, put = await asyncio.gather(deleting, putting)
        assert deleted.status_code == 204, deleted.text
        if backend == "postgres" or put.status_code != 201:  # SQLite: in either order
            assert put.status_code == 404, put.text
            assert put.json()["type"] == "/problems/environment-not-found"
        assert await count(context, select(func.count()).select_from(Service)) == 0


probe = APIRouter(prefix="/v1/_probe")


@probe.post("/duplicate-environment")
async def duplicate_environment(uow: UnitOfWorkDep) -> None:
    async with uow:
        uow.session.add(Environment(name="staging", description="duplicate"))


@probe.post("/orphan-service")
async def orphan_service(uow: UnitOfWorkDep) -> None:
    async with uow:
        uow.session.add(Service(environment="nowhere", name="web", driver="process"))


class TestIntegrityErrors:
    @pytest.fixture
    def app(self, fresh_app: FastAPI) -> FastAPI:
        fresh_app.include_router(probe)
        return fresh_app

    async def test_a_taken_unique_key_is_409_and_nothing_changes(
        self, context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        response = await client.put(
            "/v1/environments/staging", json={"description": "kept"}, headers=admin.headers
        )
        assert response.status_code == 201, response.text
        response = await client.post("/v1/_probe/duplicate-environment")
        assert_conflict_or(response)
        response = await client.get("/v1/environments/staging", headers=admin.headers)
        assert response.json()["description"] == "kept"

    async def test_another_broken_constraint_stays_a_500(self, client: httpx.AsyncClient) -> None:
        """A foreign key broken by our own code is a defect: it must stay visible."""
        response = await client.post("/v1/_probe/orphan-service")
        assert response.status_code == 500, response.text
        assert response.json()["type"] == "/problems/internal-error"
