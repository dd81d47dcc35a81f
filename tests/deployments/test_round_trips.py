"""``POST /v1/deployments`` in one transaction on one pooled connection (PostgreSQL):
authentication, the ``Idempotency-Key`` check and the change share it, and the number of
statements per request stays where it was brought. What the sharing must not change is
checked on both backends: a revoked token is refused at once, a refused request with a
key is replayed, a deployment is replayed and written once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from app.core.context import AppContext
from app.deployments.models import Deployment
from tests.deployments.conftest import Env
from tests.factories import IssuedToken

BODY = {"environment": "staging", "service": "backend", "version": "1.0.0"}


@contextmanager
def database_traffic(context: AppContext) -> Iterator[list[str]]:
    """What the engine sends while the block runs: ``checkout`` for each connection taken
    from the pool (each one pinged first), each statement's first word, ``COMMIT`` and
    ``ROLLBACK``."""
    seen: list[str] = []
    engine = context.engine.sync_engine

    def statement(*args: Any) -> None:
        seen.append(str(args[2]).split(None, 1)[0].upper())

    listeners: list[tuple[Any, str, Any]] = [
        (engine, "before_cursor_execute", statement),
        (engine, "commit", lambda *_: seen.append("COMMIT")),
        (engine, "rollback", lambda *_: seen.append("ROLLBACK")),
        (engine.pool, "checkout", lambda *_: seen.append("checkout")),
    ]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield seen
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_deployment_is_one_connection_and_one_transaction(
    client: httpx.AsyncClient, context: AppContext, deployer: IssuedToken, staging: Env
) -> None:
    # The first request records the token's use (once a minute), after its transaction.
    warm = await client.post("/v1/deployments", json=BODY, headers=deployer.headers)
    assert warm.status_code == 202, warm.text
    headers = {**deployer.headers, "Idempotency-Key": "one-trip"}
    with database_traffic(context) as real:
        response = await client.post("/v1/deployments", json=BODY, headers=headers)
    assert response.status_code == 202, response.text
    # token, key check, key claim, the plan's reads, the rows and events, the audit
    # record, the stored answer
    assert real == [
        "checkout",
        "SELECT",
        "SELECT",
        "WITH",
        "SELECT",
        "WITH",
        "INSERT",
        "UPDATE",
        "COMMIT",
    ]
    with database_traffic(context) as dry:
        planned = await client.post(
            "/v1/deployments", json={**BODY, "dry_run": True}, headers=deployer.headers
        )
    assert planned.status_code == 200, planned.text
    assert dry == ["checkout", "SELECT", "SELECT", "ROLLBACK"]
    with database_traffic(context) as replay:
        again = await client.post("/v1/deployments", json=BODY, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == response.content
    assert replay == ["checkout", "SELECT", "SELECT", "ROLLBACK"]


async def test_a_revoked_deployer_is_refused_on_its_next_deployment(
    client: httpx.AsyncClient, deployer: IssuedToken, admin: IssuedToken, staging: Env
) -> None:
    first = await client.post("/v1/deployments", json=BODY, headers=deployer.headers)
    assert first.status_code == 202, first.text
    revoked = await client.delete(f"/v1/tokens/{deployer.id}", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text
    refused = await client.post(
        "/v1/deployments", json=BODY, headers={**deployer.headers, "Idempotency-Key": "after"}
    )
    assert refused.status_code == 401, refused.text
    assert refused.json()["detail"] == "The bearer token is revoked"


async def test_keyed_deployments_are_replayed_refused_or_not(
    client: httpx.AsyncClient, context: AppContext, deployer: IssuedToken, staging: Env
) -> None:
    unknown = {**BODY, "service": "nowhere"}
    headers = {**deployer.headers, "Idempotency-Key": "refused-then-replayed"}
    refused = await client.post("/v1/deployments", json=unknown, headers=headers)
    assert refused.status_code == 404, refused.text
    assert refused.json()["type"] == "/problems/service-not-found"
    again = await client.post("/v1/deployments", json=unknown, headers=headers)
    assert again.status_code == 404
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == refused.content
    other = await client.post("/v1/deployments", json=BODY, headers=headers)
    assert other.status_code == 422, other.text  # the same key for another request

    headers = {**deployer.headers, "Idempotency-Key": "accepted-then-replayed"}
    accepted = await client.post("/v1/deployments", json=BODY, headers=headers)
    assert accepted.status_code == 202, accepted.text
    replayed = await client.post("/v1/deployments", json=BODY, headers=headers)
    assert replayed.status_code == 202
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == accepted.content
    async with context.sessionmaker() as session:
        written = await session.scalar(select(func.count()).select_from(Deployment))
    assert written == 1
