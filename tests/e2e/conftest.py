"""End-to-end tests: the ``formula-ops`` command and its processes (serve, api, worker), the
README walkthrough, the generated client.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pydantic import SecretStr

from app.bootstrap import build_context
from app.core import migrate
from app.core.context import AppContext
from app.core.settings import Settings
from tests.helpers import REDIS_URL, in_thread


@pytest.fixture(scope="module")
def worker_settings(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    prefix = f"formula-ops-test-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("state"),
        database_url=SecretStr(postgres_database),
        redis_url=SecretStr(REDIS_URL),
        queue_name=f"{prefix}:queue",
        redis_prefix=prefix,
    )
    in_thread(migrate.upgrade, settings)  # Alembic runs its own event loop
    return settings


@pytest_asyncio.fixture
async def app_context(worker_settings: Settings) -> AsyncIterator[AppContext]:
    context = build_context(worker_settings)
    yield context
    keys = [k async for k in context.redis.scan_iter(match=f"{worker_settings.redis_prefix}*")]
    if keys:
        await context.redis.delete(*keys)
    await context.aclose()
