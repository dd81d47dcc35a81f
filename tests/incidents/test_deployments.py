"""Incidents and deployments with a real worker and the sample service run by the real
``process`` driver: a deployment that ends ``error`` (it failed and so did its rollback)
opens an incident on the components behind the service; an incident lists the recent
deployments of its components' services and rolls one back."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.audit.models import AuditEvent
from app.core.context import AppContext
from app.core.db import insert_rows
from app.deployments.models import Deployment
from app.incidents.models import Incident, IncidentUpdateRecord
from app.runs import kinds
from app.runs.models import Run
from tests.deployments.conftest import Env, running_version, staging
from tests.factories import IssuedToken, sample_service
from tests.incidents.conftest import component_status, declare, events, make_component

__all__ = ["staging"]  # the fixture
# How a deployment's end opens an incident does not depend on the database.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("worker"),
    pytest.mark.one_backend("sqlite"),
]
WAIT = {"Prefer": "wait=60"}


async def _deploy(
    client: httpx.AsyncClient, token: IssuedToken, version: str, service: str = "backend"
) -> dict[str, Any]:
    response = await client.post(
        "/v1/deployments",
        json={"environment": "staging", "service": service, "version": version},
        headers={**token.headers, **WAIT},
        timeout=90,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _incidents(context: AppContext) -> list[Incident]:
    async with context.sessionmaker() as session:
        return list(await session.scalars(select(Incident).order_by(Incident.created_at)))


async def test_a_deployment_that_ends_in_error_opens_an_incident(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    deployer: IssuedToken,
    staging: Env,
) -> None:
    api = await make_component(context, "Backend API", services=["staging/backend"])
    web = await make_component(context, "Frontend", services=["staging/frontend"])
    good = await _deploy(client, deployer, "1.0.0")
    assert good["status"] == "success"
    broken = await _deploy(client, deployer, "1.1.0-broken")
    assert broken["status"] == "rolled_back"  # rolled back fine: no incident
    assert await _incidents(context) == []

    # The service's health URL now points where nothing answers: the next deployment
    # fails, and so does its rollback to 1.0.0.
    service = sample_service(staging.ports["backend"], health_timeout_seconds=1)
    service["health_url"] = f"http://127.0.0.1:{staging.ports['frontend']}/health"
    changed = await client.put(
        "/v1/environments/staging/services/backend", json=service, headers=admin.headers
    )
    assert changed.status_code == 200, changed.text
    failed = await _deploy(client, deployer, "1.2.0")
    assert failed["status"] == "error", failed["failure"]

    (incident,) = await _incidents(context)
    assert incident.source == "deployment"
    assert incident.severity == "P2"
    assert incident.status == "investigating"
    assert incident.title == "Problem after a change to Backend API"  # public: no service
    assert await component_status(context, api.id) == "degraded_performance"
    assert await component_status(context, web.id) == "operational"
    (created,) = await events(context, "incident.created")
    assert created["components"] == [
        {
            "component_id": api.id,
            "name": "Backend API",
            "status": "degraded_performance",
            "showcase": True,
        }
    ]
    assert "1.2.0" not in created["latest_update"]["body"]  # details stay internal

    read = await client.get(f"/v1/incidents/{incident.id}", headers=deployer.headers)
    assert read.status_code == 200
    body = read.json()
    public, internal = body["timeline"]
    assert public["visibility"] == "public"
    assert internal["visibility"] == "internal"
    assert failed["id"] in internal["body"]
    assert "A deployment of staging/backend" in internal["body"]
    public_page = await client.get("/api/v2/incidents.json")
    assert "Problem after a change to Backend API" in public_page.text
    assert "staging" not in public_page.text
    assert [d["id"] for d in body["recent_deployments"]] == [
        failed["id"],
        broken["id"],
        good["id"],
    ]
    assert body["recent_deployments"][0]["status"] == "error"
    assert body["recent_deployments"][0]["links"]["rollback"] == (
        f"/v1/incidents/{incident.id}/rollback"
    )
    async with context.sessionmaker() as session:
        audited = await session.scalar(
            select(AuditEvent.actor_name).where(
                AuditEvent.action == "incident.auto_open", AuditEvent.resource_id == incident.id
            )
        )
    assert audited == f"run:{failed['id']}"


async def test_an_incident_lists_recent_deployments_and_rolls_one_back(
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    deployer: IssuedToken,
    staging: Env,
) -> None:
    api = await make_component(context, "Backend API", services=["staging/backend"])
    first = await _deploy(client, deployer, "1.0.0")
    second = await _deploy(client, deployer, "2.0.0")
    other = await _deploy(client, deployer, "5.0.0", service="frontend")
    assert [first["status"], second["status"], other["status"]] == ["success"] * 3
    old = await _deploy(client, deployer, "0.9.0", service="frontend")
    async with context.unit_of_work() as uow:  # requested long before the incident
        await uow.session.execute(
            update(Deployment)
            .where(Deployment.id == old["id"])
            .values(created_at=dt.datetime.fromisoformat(old["created_at"]) - dt.timedelta(hours=3))
        )
    web = await make_component(context, "Frontend", services=["staging/frontend"])

    incident = await declare(client, operator, severity="P1", components=[{"component_id": api.id}])
    incident_id = incident["id"]
    assert [d["id"] for d in incident["recent_deployments"]] == [second["id"], first["id"]]
    assert incident["recent_deployments"][0]["services"] == [
        {"name": "backend", "version": "2.0.0", "previous_version": "1.0.0", "changed": True}
    ]

    unrelated = await client.post(
        f"/v1/incidents/{incident_id}/rollback",
        json={"deployment_id": other["id"]},
        headers=operator.headers,
    )
    assert unrelated.status_code == 409
    assert unrelated.json()["type"] == "/problems/unrelated-deployment"
    nothing_before = await client.post(
        f"/v1/incidents/{incident_id}/rollback",
        json={"deployment_id": first["id"]},
        headers=operator.headers,
    )
    assert nothing_before.status_code == 409
    assert nothing_before.headers["content-type"] == "application/problem+json"

    rolled = await client.post(
        f"/v1/incidents/{incident_id}/rollback",
        json={"deployment_id": second["id"]},
        headers={**operator.headers, "Idempotency-Key": "roll-1"},
    )
    assert rolled.status_code == 202, rolled.text
    rollback = rolled.json()
    assert rollback["kind"] == "rollback"
    assert rollback["rollback_of"] == second["id"]
    assert rolled.headers["Location"] == f"/v1/deployments/{rollback['id']}"
    replay = await client.post(
        f"/v1/incidents/{incident_id}/rollback",
        json={"deployment_id": second["id"]},
        headers={**operator.headers, "Idempotency-Key": "roll-1"},
    )
    assert replay.json()["id"] == rollback["id"]
    done = await client.get(f"/v1/runs/{rollback['id']}?wait=60", headers=operator.headers)
    assert done.json()["status"] == "success", done.text
    assert await running_version(staging, "backend") == "1.0.0"

    after = (await client.get(f"/v1/incidents/{incident_id}", headers=operator.headers)).json()
    assert after["timeline"][-1]["visibility"] == "internal"
    assert rollback["id"] in after["timeline"][-1]["body"]
    # Frontend joins the incident: the frontend deployment in the window appears, the
    # one requested hours before does not.
    joined = await client.patch(
        f"/v1/incidents/{incident_id}",
        json={"components": [{"component_id": api.id}, {"component_id": web.id}]},
        headers=operator.headers,
    )
    listed = [d["id"] for d in joined.json()["recent_deployments"]]
    assert other["id"] in listed
    assert old["id"] not in listed


async def test_an_auto_opened_incident_names_no_environment_in_public(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    """A run that ended ``error`` with no component behind it: the public title and
    entry say only that a change caused a problem; the environment and the failure stay
    in the internal entry."""
    run = Run(
        kind="deployment", status="error", environment="pci-vault-eu1", requested_by="token:t1"
    )
    run.failure_type = "/problems/step-failed"
    run.failure_detail = "verify failed"
    async with context.unit_of_work() as uow:
        await insert_rows(uow.session, [run])
        await kinds.run_ended(uow, context, run)

    page = await client.get("/api/v2/incidents.json")
    assert page.status_code == 200
    (public,) = page.json()["incidents"]
    assert public["name"] == "Problem after a change"
    assert "pci-vault-eu1" not in page.text
    (incident,) = await _incidents(context)
    async with context.sessionmaker() as session:
        bodies = list(
            await session.scalars(
                select(IncidentUpdateRecord.body).where(
                    IncidentUpdateRecord.incident_id == incident.id,
                    IncidentUpdateRecord.visibility == "internal",
                )
            )
        )
    assert any("pci-vault-eu1" in body and "verify failed" in body for body in bodies), bodies
