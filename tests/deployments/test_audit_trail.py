"""The audit trail of a deployment story has no gaps: every change — the API's and the
worker's own (outcomes, the automatic rollback, the pins it creates) — and every refused
change leaves a row, and the chain still verifies."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.audit import service as audit_service
from app.audit.models import AuditEvent
from app.core.context import AppContext
from tests.deployments.conftest import Env, running_version
from tests.deployments.test_deployments import WAIT, deploy
from tests.factories import IssuedToken
from tests.helpers import audit_events_after as events_after
from tests.helpers import last_audit_seq as last_seq

pytestmark = pytest.mark.slow


def row(event: AuditEvent) -> tuple[Any, ...]:
    return (
        event.action,
        event.outcome,
        event.actor_kind,
        event.actor_token_id or event.actor_name,
        event.origin_token_id,
        event.resource_id,
    )


@pytest.mark.usefixtures("worker")
async def test_deploy_broken_deploy_rollback_and_refused_retries_leave_no_gap(
    context: AppContext,
    client: httpx.AsyncClient,
    deployer: IssuedToken,
    staging: Env,
) -> None:
    start = await last_seq(context)
    first = (await deploy(client, deployer, "1.0.0")).json()
    assert first["status"] == "success", first["failure"]
    second = (await deploy(client, deployer, "1.1.0")).json()
    assert second["status"] == "success", second["failure"]
    broken = (await deploy(client, deployer, "1.2.0-broken")).json()
    assert broken["status"] == "rolled_back"
    assert await running_version(staging, "backend") == "1.1.0"
    rolled = await client.post(
        f"/v1/deployments/{second['id']}/rollback",
        headers={**deployer.headers, **WAIT},
        timeout=90,
    )
    assert rolled.status_code == 201, rolled.text
    rollback = rolled.json()
    assert rollback["status"] == "success", rollback["failure"]
    assert await running_version(staging, "backend") == "1.0.0"

    refused = [
        await deploy(client, deployer, "1.2.0-broken"),  # pinned by the automatic rollback
        await deploy(client, deployer, "1.1.0"),  # pinned by the manual rollback
        await client.post(  # rolling the rollback back would bring back 1.1.0
            f"/v1/deployments/{rollback['id']}/rollback", headers=deployer.headers
        ),
    ]
    assert [r.status_code for r in refused] == [409, 409, 409]
    assert {r.json()["type"] for r in refused} == {"/problems/version-pinned"}
    invalid = await client.post(
        "/v1/deployments",
        json={"environment": "staging", "service": "backend", "version": ""},
        headers=deployer.headers,
    )
    assert invalid.status_code == 422

    # The worker's own start-up records (the runbooks' default schedules) are not the
    # deployments' trail.
    events = [e for e in await events_after(context, start) if not e.action.startswith("schedule.")]
    run = "run"
    token = "token"
    me = deployer.id
    assert [row(e) for e in events] == [
        ("deployment.create", "success", token, me, None, first["id"]),
        ("deployment.succeeded", "success", run, f"run:{first['id']}", me, first["id"]),
        ("deployment.create", "success", token, me, None, second["id"]),
        ("deployment.succeeded", "success", run, f"run:{second['id']}", me, second["id"]),
        ("deployment.create", "success", token, me, None, broken["id"]),
        ("deployment.auto_rollback", "success", run, f"run:{broken['id']}", me, broken["id"]),
        ("pin.create", "success", run, f"run:{broken['id']}", me, "staging/backend/1.2.0-broken"),
        ("deployment.rolled_back", "failed", run, f"run:{broken['id']}", me, broken["id"]),
        ("pin.create", "success", token, me, None, "staging/backend/1.1.0"),
        ("rollback.create", "success", token, me, None, rollback["id"]),
        ("deployment.succeeded", "success", run, f"run:{rollback['id']}", me, rollback["id"]),
        ("deployment.create", "failed", token, me, None, None),
        ("deployment.create", "failed", token, me, None, None),
        ("rollback.create", "failed", token, me, None, rollback["id"]),
        ("deployment.create", "failed", token, me, None, None),
    ]
    auto = events[5]
    assert auto.summary["services"] == [{"name": "backend", "from": "1.2.0-broken", "to": "1.1.0"}]
    assert auto.summary["cause"]["type"] == "/problems/health-check-failed"
    assert events[7].summary["failure_type"] == "/problems/health-check-failed"
    for refusal in events[11:14]:
        assert refusal.summary["status"] == 409
        assert refusal.summary["type"] == "/problems/version-pinned"
        assert refusal.request_id is not None
        assert refusal.client_address == "127.0.0.1"
    assert events[14].summary["status"] == 422
    locations = events[14].summary["errors"]
    assert any(loc[0] == "body" and loc[-1] == "version" for loc in locations), locations

    verified = (await client.get("/v1/audit-events/verify", headers=deployer.headers)).json()
    assert verified["valid"] is True, verified
    async with context.sessionmaker() as session:
        assert (await audit_service.verify(session)).valid
