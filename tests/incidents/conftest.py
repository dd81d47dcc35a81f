"""Builders for the incident tests: components written as rows (their own API belongs to
the components domain), and reading what an incident left behind."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.components.models import Component
from app.core.context import AppContext
from app.core.db import insert_rows
from app.outbox.models import OutboxEvent
from tests.factories import IssuedToken, issue_token


async def make_component(
    context: AppContext, name: str, *, services: list[str] | None = None, **extra: Any
) -> Component:
    component = Component(name=name, services=services or [], **extra)
    async with context.unit_of_work() as uow:
        await insert_rows(uow.session, [component])
    return component


async def component_status(context: AppContext, component_id: str) -> str:
    async with context.sessionmaker() as session:
        status = await session.scalar(select(Component.status).where(Component.id == component_id))
    assert status is not None
    return status


async def events(context: AppContext, type: str) -> list[dict[str, Any]]:
    async with context.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type == type).order_by(OutboxEvent.created_at)
        )
        return [row.data for row in rows]


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


@pytest.fixture
async def viewer(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.VIEWER)


async def declare(client: httpx.AsyncClient, token: IssuedToken, **body: Any) -> dict[str, Any]:
    """``POST /v1/incidents``; the created incident."""
    payload = {"title": "Checkout is slow", "severity": "P2", **body}
    response = await client.post("/v1/incidents", json=payload, headers=token.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
