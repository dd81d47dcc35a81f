"""The deploy freeze (acceptance 4, deployments): while a window is in progress for an
environment a deployment to it (a dry run too) gets 409 ``deploy-freeze`` naming the
window; after the window it is accepted. A deploy window freezes nothing, other
environments are not concerned, and a rollback stays possible. A deployment accepted
before the freeze began waits queued (real workers take its job and leave it) and runs
once the window has ended."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.context import AppContext
from app.core.settings import Settings
from app.maintenances import service
from app.runs import service as run_service
from app.runs.models import Run
from tests.factories import IssuedToken, sample_service
from tests.helpers import (
    audit_events_after,
    free_port,
    last_audit_seq,
    run_worker_burst,
    stop_services,
)
from tests.maintenances.conftest import add_environment, schedule, stamp, window_body

# The freeze check's query is the same on either database; PostgreSQL here.
pytestmark = pytest.mark.one_backend("postgres")

HOUR = dt.timedelta(hours=1)
WAIT = {"Prefer": "wait=60"}


@pytest.fixture
async def environments(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> AsyncIterator[dict[str, int]]:
    """``production`` and ``staging``, each with a ``backend`` (the sample service on a
    free loopback port); the processes are stopped afterwards."""
    ports = {}
    for name in ("production", "staging"):
        await add_environment(client, admin, name)
        ports[name] = free_port()
        response = await client.put(
            f"/v1/environments/{name}/services/backend",
            json=sample_service(ports[name]),
            headers=admin.headers,
        )
        assert response.status_code == 201, response.text
    yield ports
    await stop_services(context)


async def _deploy(
    client: httpx.AsyncClient, token: IssuedToken, environment: str, version: str, **extra: Any
) -> httpx.Response:
    return await client.post(
        "/v1/deployments",
        json={"environment": environment, "service": "backend", "version": version, **extra},
        headers=token.headers,
    )


@pytest.mark.usefixtures("environments")
async def test_a_deployment_to_a_frozen_environment_gets_409_until_the_window_ends(
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    deployer: IssuedToken,
) -> None:
    now = dt.datetime.now(dt.UTC)
    end = now + HOUR
    window = await schedule(
        client, operator, window_body(now - HOUR, end, environments=["production"])
    )
    started = await service.tick(context, dt.datetime.now(dt.UTC))
    assert started.started == [window["id"]]
    seq = await last_audit_seq(context)

    refused = await _deploy(client, deployer, "production", "2.0.0")
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "/problems/deploy-freeze"
    assert "Database upgrade" in problem["detail"]
    assert window["id"] in problem["detail"]
    assert problem["maintenance_id"] == window["id"]
    assert problem["maintenance_title"] == "Database upgrade"
    assert problem["frozen_until"] == stamp(end)
    assert problem["environment"] == "production"
    # A dry run says so too, and nothing was queued.
    dry = await _deploy(client, deployer, "production", "2.0.0", dry_run=True)
    assert dry.status_code == 409, dry.text
    assert dry.json()["maintenance_id"] == window["id"]
    listed = await client.get("/v1/deployments", headers=deployer.headers)
    assert listed.json()["items"] == []
    audited = await audit_events_after(context, seq, action="deployment.create")
    assert [(e.outcome, e.summary["type"]) for e in audited] == [
        ("failed", "/problems/deploy-freeze")
    ] * 2

    # Another environment is not frozen.
    accepted = await _deploy(client, deployer, "staging", "2.0.0")
    assert accepted.status_code == 202, accepted.text

    # After the window (the scheduler ends it), deployments are accepted again.
    ended = await service.tick(context, end)
    assert ended.completed == [window["id"]]
    accepted = await _deploy(client, deployer, "production", "2.0.0")
    assert accepted.status_code == 202, accepted.text


@pytest.mark.usefixtures("environments")
async def test_a_deploy_window_freezes_nothing(
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    deployer: IssuedToken,
) -> None:
    now = dt.datetime.now(dt.UTC)
    window = await schedule(
        client,
        operator,
        window_body(now - HOUR, now + HOUR, environments=["production"], deploy_window=True),
    )
    path = f"/v1/maintenances/{window['id']}/start"
    assert (await client.post(path, headers=operator.headers)).status_code == 200
    accepted = await _deploy(client, deployer, "production", "2.0.0")
    assert accepted.status_code == 202, accepted.text
    # Made a freezing window while it lasts, it freezes.
    changed = await client.patch(
        f"/v1/maintenances/{window['id']}",
        json={"deploy_window": False},
        headers=operator.headers,
    )
    assert changed.status_code == 200, changed.text
    refused = await _deploy(client, deployer, "production", "2.0.1")
    assert refused.status_code == 409, refused.text
    complete = f"/v1/maintenances/{window['id']}/complete"
    assert (await client.post(complete, headers=operator.headers)).status_code == 200
    accepted = await _deploy(client, deployer, "production", "2.0.1")
    assert accepted.status_code == 202, accepted.text


@pytest.mark.usefixtures("environments")
async def test_a_window_due_freezes_before_the_scheduler_passes(
    client: httpx.AsyncClient, operator: IssuedToken, deployer: IssuedToken
) -> None:
    now = dt.datetime.now(dt.UTC)
    window = await schedule(
        client, operator, window_body(now - HOUR, now + HOUR, environments=["production"])
    )
    refused = await _deploy(client, deployer, "production", "2.0.0")
    assert refused.status_code == 409, refused.text
    assert refused.json()["maintenance_id"] == window["id"]
    # A window still to come freezes nothing yet.
    cancel = f"/v1/maintenances/{window['id']}/cancel"
    assert (await client.post(cancel, headers=operator.headers)).status_code == 200
    await schedule(
        client, operator, window_body(now + HOUR, now + 2 * HOUR, environments=["production"])
    )
    accepted = await _deploy(client, deployer, "production", "2.0.0")
    assert accepted.status_code == 202, accepted.text


@pytest.mark.usefixtures("worker")
async def test_a_rollback_is_not_frozen(
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    deployer: IssuedToken,
    environments: dict[str, int],
) -> None:
    for version in ("1.0.0", "1.1.0"):
        response = await client.post(
            "/v1/deployments",
            json={"environment": "production", "service": "backend", "version": version},
            headers={**deployer.headers, **WAIT},
            timeout=90,
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "success", response.text
    bad = response.json()["id"]
    now = dt.datetime.now(dt.UTC)
    await schedule(
        client, operator, window_body(now - HOUR, now + HOUR, environments=["production"])
    )
    assert (await _deploy(client, deployer, "production", "1.2.0")).status_code == 409
    rollback = await client.post(
        f"/v1/deployments/{bad}/rollback", headers={**deployer.headers, **WAIT}, timeout=90
    )
    assert rollback.status_code in (200, 201, 202), rollback.text
    assert rollback.json()["kind"] == "rollback"


async def _run_status(context: AppContext, run_id: str) -> str:
    async with context.sessionmaker() as session:
        status = await session.scalar(select(Run.status).where(Run.id == run_id))
    assert status is not None
    return status


@pytest.mark.usefixtures("environments")
async def test_a_deployment_accepted_before_the_freeze_waits_queued_until_it_ends(
    context: AppContext,
    settings: Settings,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    deployer: IssuedToken,
) -> None:
    """Accepted (queued, no worker has taken it yet), then a window freezing its
    environment starts: a worker does not run it but leaves it queued; the reconciler
    enqueues it again and it still waits; once the window has ended it runs."""
    accepted = await _deploy(client, deployer, "production", "2.0.0")
    assert accepted.status_code == 202, accepted.text
    deployment_id = accepted.json()["id"]
    now = dt.datetime.now(dt.UTC)
    end = now + HOUR
    window = await schedule(
        client, operator, window_body(now - HOUR, end, environments=["production"])
    )
    assert (await service.tick(context, dt.datetime.now(dt.UTC))).started == [window["id"]]

    assert await run_worker_burst(settings) >= 1  # the worker took the job
    assert await _run_status(context, deployment_id) == "queued"
    read = await client.get(f"/v1/deployments/{deployment_id}", headers=deployer.headers)
    assert read.json()["status"] == "queued", read.json()
    # Not lost: the reconciler enqueues the waiting run again; still frozen, it waits.
    reconciled = await run_service.reconcile(context, stale_after=dt.timedelta(0))
    assert reconciled.reenqueued_stale == 1
    assert await run_worker_burst(settings) >= 1
    assert await _run_status(context, deployment_id) == "queued"

    # The window ends (the scheduler completes it): the next reconciliation runs it.
    assert (await service.tick(context, end)).completed == [window["id"]]
    reconciled = await run_service.reconcile(context, stale_after=dt.timedelta(0))
    assert reconciled.reenqueued_stale == 1
    assert await run_worker_burst(settings) >= 1
    done = await client.get(f"/v1/deployments/{deployment_id}", headers=deployer.headers)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "success", done.json()


@pytest.mark.usefixtures("environments")
async def test_a_rollback_does_not_wait_behind_a_deployment_the_freeze_holds(
    context: AppContext,
    settings: Settings,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    deployer: IssuedToken,
) -> None:
    """A deployment waits queued for the freeze to end; a rollback of the service asked
    for during the freeze runs at once, not after it; the waiting one runs after."""
    ids = []
    for version in ("1.0.0", "1.1.0"):
        response = await _deploy(client, deployer, "production", version)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
        await run_worker_burst(settings)
        assert await _run_status(context, ids[-1]) == "success"
    waiting = await _deploy(client, deployer, "production", "1.2.0")
    assert waiting.status_code == 202, waiting.text
    now = dt.datetime.now(dt.UTC)
    end = now + HOUR
    window = await schedule(
        client, operator, window_body(now - HOUR, end, environments=["production"])
    )
    assert (await service.tick(context, dt.datetime.now(dt.UTC))).started == [window["id"]]

    rollback = await client.post(f"/v1/deployments/{ids[1]}/rollback", headers=deployer.headers)
    assert rollback.status_code in (201, 202), rollback.text
    await run_worker_burst(settings)
    assert await _run_status(context, rollback.json()["id"]) == "success"
    assert await _run_status(context, waiting.json()["id"]) == "queued"

    assert (await service.tick(context, end)).completed == [window["id"]]
    await run_service.reconcile(context, stale_after=dt.timedelta(0))
    await run_worker_burst(settings)
    assert await _run_status(context, waiting.json()["id"]) == "success"
