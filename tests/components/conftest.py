"""Tests of ``/v1/components`` (``app/components``): the API, the operator's status and
the claims, the event, the embedded seed.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.components.events import COMPONENT_STATUS_CHANGED
from app.core.context import AppContext
from app.outbox.models import OutboxEvent
from tests.factories import IssuedToken, issue_token


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


@pytest.fixture
async def viewer(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.VIEWER)


async def create_component(
    client: httpx.AsyncClient, token: IssuedToken, name: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/components", json={"name": name, **fields}, headers=token.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def status_events(context: AppContext) -> list[dict[str, Any]]:
    """The data of every ``component.status_changed`` in the outbox, oldest first."""
    async with context.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.type == COMPONENT_STATUS_CHANGED)
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
        )
        return [dict(row.data) for row in rows]
