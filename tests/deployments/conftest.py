"""Fixtures of the deployment tests: a real worker, environments whose services are the
sample web service run by the real ``process`` driver on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from app.core.context import AppContext
from tests.factories import IssuedToken, sample_service
from tests.helpers import free_port, stop_services


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


from tests.docker_env import docker_env  # noqa: E402, F401  (the real Docker engine)
