"""Fixtures of the maintenance tests: tokens of each role, components written through the
model (and claims), environments through the API, windows through the API."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.components.models import Component
from app.core.context import AppContext
from app.outbox.models import OutboxEvent
from tests.factories import IssuedToken, issue_token


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


@pytest.fixture
async def viewer(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.VIEWER)


async def add_component(context: AppContext, name: str, **values: Any) -> str:
    async with context.unit_of_work() as uow:
        component = Component(name=name, **values)
        uow.session.add(component)
        await uow.session.flush()
        return component.id


async def component_status(context: AppContext, component_id: str) -> str:
    async with context.sessionmaker() as session:
        status = await session.scalar(select(Component.status).where(Component.id == component_id))
    assert status is not None
    return status


async def add_environment(client: httpx.AsyncClient, admin: IssuedToken, name: str) -> None:
    response = await client.put(
        f"/v1/environments/{name}", json={"description": "tests"}, headers=admin.headers
    )
    assert response.status_code == 201, response.text


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def window_body(
    start: dt.datetime, end: dt.datetime, *, title: str = "Database upgrade", **extra: Any
) -> dict[str, Any]:
    return {"title": title, "scheduled_for": stamp(start), "scheduled_until": stamp(end), **extra}


async def schedule(
    client: httpx.AsyncClient, token: IssuedToken, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post("/v1/maintenances", json=body, headers=token.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def events(context: AppContext, prefix: str = "maintenance.") -> list[OutboxEvent]:
    async with context.sessionmaker() as session:
        return list(
            await session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.type.startswith(prefix))
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
            )
        )
