"""Exactly one deployment per Idempotency-Key when the database fails around the change,
on real PostgreSQL. The faults are the database's own: a table lock held from another
connection, a waiting query cancelled with ``pg_cancel_backend``.

- (a) The deployment committed, then its ``Prefer: wait`` failed: the answer is the
  stored 202, and the retry with the same key answers the same deployment.
- (b) The first request is held inside its transaction longer than any age could grant
  its key to someone else: the retry gets 409 at once, never a second deployment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from app.auth.roles import Role
from app.core.context import AppContext
from app.deployments.models import Deployment
from tests.factories import IssuedToken, issue_token, sample_service
from tests.helpers import free_port

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)
BODY = {"environment": "staging", "service": "backend", "version": "1.0.0"}


@pytest.fixture
async def deployer(context: AppContext, client: httpx.AsyncClient) -> IssuedToken:
    """A deployer, and ``staging`` with one service (no worker runs: deployments stay
    queued, which is all these tests need)."""
    admin = await issue_token(context, Role.ADMIN)
    response = await client.put("/v1/environments/staging", json={}, headers=admin.headers)
    assert response.status_code == 201, response.text
    response = await client.put(
        "/v1/environments/staging/services/backend",
        json=sample_service(free_port()),
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    return await issue_token(context, Role.DEPLOYER)


@pytest.fixture
async def locker(context: AppContext) -> AsyncIterator[psycopg.AsyncConnection[tuple[object]]]:
    """Another connection to the test database, to hold locks and cancel queries."""
    async with await psycopg.AsyncConnection.connect(pg_dsn(context)) as conn:
        yield conn


def pg_dsn(context: AppContext) -> str:
    assert context.settings.database_url is not None
    return context.settings.database_url.get_secret_value()


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds; a bounded wait, not a timing assertion."""
    for _ in range(1200):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def deployments(context: AppContext) -> int:
    async with context.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Deployment)) or 0)


async def waiting(context: AppContext, wait_event: str) -> list[int]:
    """Backends of the test database waiting for a lock of kind ``wait_event``
    (``relation``: a table lock)."""
    async with await psycopg.AsyncConnection.connect(pg_dsn(context), autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = %s",
            [wait_event],
        )
        return [int(row[0]) for row in await cursor.fetchall()]


async def test_a_wait_failing_after_the_commit_answers_the_deployment_and_keeps_the_key(
    client: httpx.AsyncClient,
    context: AppContext,
    deployer: IssuedToken,
    locker: psycopg.AsyncConnection[tuple[object]],
) -> None:
    headers = {**deployer.headers, "Idempotency-Key": "deploy-a", "Prefer": "wait=120"}
    first = asyncio.create_task(
        client.post("/v1/deployments", json=BODY, headers=headers, timeout=180)
    )

    async def committed() -> bool:
        return first.done() or await deployments(context) == 1

    await until(committed, "the deployment committed")
    assert not first.done(), (await first).text  # still waiting for it to end
    # The wait reads the run: lock the table, and cancel the read that blocks on it.
    await locker.execute("LOCK TABLE run IN ACCESS EXCLUSIVE MODE")

    async def blocked() -> bool:
        return bool(await waiting(context, "relation"))

    await until(blocked, "the wait's read blocked on the lock")
    (pid,) = await waiting(context, "relation")
    await locker.execute("SELECT pg_cancel_backend(%s)", [pid])
    await locker.rollback()
    response = await first

    assert response.status_code == 202, response.text  # not 503 "nothing was changed"
    deployment_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/deployments/{deployment_id}"
    retried = await client.post("/v1/deployments", json=BODY, headers=headers, timeout=180)
    assert retried.status_code == 202, retried.text
    assert retried.json()["id"] == deployment_id
    assert retried.headers["idempotent-replayed"] == "true"
    assert await deployments(context) == 1


async def test_a_retry_while_the_first_is_held_in_its_transaction_is_409_never_a_second(
    client: httpx.AsyncClient,
    context: AppContext,
    deployer: IssuedToken,
    locker: psycopg.AsyncConnection[tuple[object]],
) -> None:
    headers = {**deployer.headers, "Idempotency-Key": "deploy-b"}
    # Hold the first request inside its transaction: it waits to insert its deployment.
    await locker.execute("LOCK TABLE deployment IN EXCLUSIVE MODE")
    first = asyncio.create_task(client.post("/v1/deployments", json=BODY, headers=headers))

    async def first_held() -> bool:
        return len(await waiting(context, "relation")) == 1

    await until(first_held, "the first request waits on the lock")
    # Longer than any age that would hand its key to a retry: age every committed key
    # row by an hour, as time would.
    async with await psycopg.AsyncConnection.connect(pg_dsn(context), autocommit=True) as conn:
        await conn.execute(
            "UPDATE idempotency_key SET created_at = created_at - interval '1 hour', "
            "locked_until = locked_until - interval '1 hour'"
        )
    retry = asyncio.create_task(client.post("/v1/deployments", json=BODY, headers=headers))

    async def retry_answered_or_held() -> bool:
        return retry.done() or len(await waiting(context, "relation")) == 2

    await until(retry_answered_or_held, "the retry answered, or waits on the lock too")
    answered_while_first_held = retry.done()
    await locker.rollback()
    first_response, retry_response = await first, await retry

    assert first_response.status_code == 202, first_response.text
    assert retry_response.status_code == 409, retry_response.text
    assert retry_response.json()["type"] == "/problems/idempotency-key-in-flight"
    assert retry_response.headers["retry-after"] == "1"
    assert answered_while_first_held
    assert await deployments(context) == 1
    replay = await client.post("/v1/deployments", json=BODY, headers=headers)
    assert replay.status_code == 202
    assert replay.json()["id"] == first_response.json()["id"]
