"""Fixtures of the deployment tests: a real worker, environments whose services are the
sample web service run by the real ``process`` driver on free loopback ports."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.core.context import AppContext
from app.drivers.base import ServiceSpec
from app.drivers.pool import drivers
from app.environments.models import Service
from tests.factories import IssuedToken, issue_token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_service(port: int, *, order: int = 0, settle: float = 0, **extra: Any) -> dict[str, Any]:
    return {
        "driver": "process",
        "config": {"command": ["{python}", "-m", "app.embedded.sample_service"], "port": port},
        "health_url": f"http://127.0.0.1:{port}/health",
        "health_timeout_seconds": 10,
        "deploy_order": order,
        "settle_seconds": settle,
        "smoke_tests": [{"name": "home", "type": "http", "url": f"http://127.0.0.1:{port}/"}],
        **extra,
    }


@dataclass
class Env:
    name: str
    ports: dict[str, int]

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/"


async def running_version(env: Env, service: str) -> str | None:
    async with httpx.AsyncClient(trust_env=False) as http:
        try:
            response = await http.get(env.url(service), timeout=2)
        except httpx.HTTPError:
            return None
    version: str = response.json()["version"]
    return version


@pytest.fixture
async def admin(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.ADMIN)


@pytest.fixture
async def deployer(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.DEPLOYER)


@pytest.fixture
async def staging(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> AsyncIterator[Env]:
    """``staging`` with ``backend`` (deployed first) and ``frontend``; their processes
    are stopped afterwards."""
    env = Env("staging", {"backend": free_port(), "frontend": free_port()})
    response = await client.put(
        "/v1/environments/staging", json={"description": "tests"}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    for order, name in enumerate(("backend", "frontend")):
        response = await client.put(
            f"/v1/environments/staging/services/{name}",
            json=sample_service(env.ports[name], order=order),
            headers=admin.headers,
        )
        assert response.status_code == 201, response.text
    yield env
    await stop_services(context)


async def stop_services(context: AppContext) -> None:
    async with context.sessionmaker() as session:
        services = list(await session.scalars(select(Service)))

    async def quiet(line: str) -> None:
        pass

    for s in services:
        spec = ServiceSpec(s.environment, s.name, s.driver, s.config, s.health_url)
        await drivers(context).get(s.driver, s.config).stop(spec, quiet)


from tests.docker_env import docker_env  # noqa: E402, F401  (the real Docker engine)
