"""``/health``, ``/ready`` and ``/metrics`` on both backends, with dependencies up and down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from pydantic import SecretStr

from app.auth.roles import Role
from app.core.context import AppContext, build_context
from app.core.settings import Settings
from app.main import create_app
from app.runs.models import RunKind
from app.runs.service import StepSpec, create_run
from tests.factories import app_with, issue_token
from tests.helpers import free_port


async def _client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    context = build_context(settings)
    app = create_app(settings, context=context)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
    finally:
        await context.aclose()


@pytest_asyncio.fixture
async def redis_down(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The same database, but Redis at a port where nothing listens."""
    broken = settings.model_copy(
        update={"redis_url": SecretStr(f"redis://127.0.0.1:{free_port()}/0")}
    )
    async for http in _client_for(broken):
        yield http


@pytest_asyncio.fixture
async def database_down(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The same Redis, but PostgreSQL at a port where nothing listens."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    broken = settings.model_copy(update={"database_url": SecretStr(url)})
    async for http in _client_for(broken):
        yield http


class TestHealth:
    async def test_liveness_needs_no_dependency(self, redis_down: httpx.AsyncClient) -> None:
        response = await redis_down.get("/health")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"


class TestReady:
    async def test_ready_reports_database_and_redis(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/ready")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready"
        assert body["checks"]["database"]["status"] == "ok"
        assert body["checks"]["redis"]["status"] == "ok"

    async def test_redis_unreachable_is_503_naming_redis(
        self, redis_down: httpx.AsyncClient
    ) -> None:
        response = await redis_down.get("/ready")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"] == "/problems/not-ready"
        assert body["detail"] == "unavailable: redis"
        assert body["checks"]["redis"]["status"] == "unavailable"
        assert body["checks"]["database"]["status"] == "ok"
        assert response.headers["retry-after"] == "5"

    async def test_database_unreachable_is_503_naming_the_database(
        self, database_down: httpx.AsyncClient
    ) -> None:
        response = await database_down.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["detail"] == "unavailable: database"
        assert body["checks"]["redis"]["status"] == "ok"
        assert "postgres@" not in response.text


class TestMetrics:
    async def test_requests_are_counted_by_route_template(self, client: httpx.AsyncClient) -> None:
        await client.get("/health")
        await client.get("/v1/does-not-exist/123")
        text = (await client.get("/metrics")).text
        assert 'formula_ops_http_requests_total{method="GET",route="/health",status="200"}' in text
        assert 'route="<unmatched>",status="404"' in text
        assert "/does-not-exist/123" not in text
        assert "formula_ops_http_request_duration_seconds_bucket" in text

    async def test_runs_are_counted_by_kind_and_status(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        async with context.unit_of_work() as uow:
            for _ in range(3):
                await create_run(
                    uow,
                    context,
                    kind=RunKind.HEALTH_CHECK,
                    steps=[StepSpec("pause", "wait", {"seconds": 0})],
                    requested_by="t",
                )
        text = (await client.get("/metrics")).text
        assert 'formula_ops_runs{kind="health_check",status="queued"} 3.0' in text

    async def test_versioned_routes_are_labelled_by_full_template(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        admin = await issue_token(context, Role.ADMIN)
        await client.get("/v1/tokens/0000000000000000", headers=admin.headers)
        text = (await client.get("/metrics")).text
        assert 'route="/v1/tokens/{token_id}",status="404"' in text

    async def test_metrics_can_be_made_private(self, context: AppContext) -> None:
        app = app_with(context, metrics_public=False)
        viewer = await issue_token(context, Role.VIEWER)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            anonymous = await http.get("/metrics")
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            allowed = await http.get("/metrics", headers=viewer.headers)
            assert allowed.status_code == 200
            assert "formula_ops_http_requests_total" in allowed.text
