"""``POST /v1/deployments`` end to end with a real worker and the real ``process``
driver: success, automatic rollback with a pin, checklist gate, dry run, idempotent
retries, queueing, manual rollback, cancellation, evidence, events."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.context import AppContext
from app.models import OutboxEvent
from tests.deployments.conftest import Env, running_version
from tests.factories import IssuedToken, sample_service

WAIT = {"Prefer": "wait=60"}
pytestmark = pytest.mark.slow


async def deploy(
    client: httpx.AsyncClient, token: IssuedToken, version: str, **body: Any
) -> httpx.Response:
    payload = {"environment": "staging", "service": "backend", "version": version, **body}
    return await client.post(
        "/v1/deployments", json=payload, headers={**token.headers, **WAIT}, timeout=90
    )


@pytest.mark.usefixtures("worker")
class TestDeploy:
    async def test_success_then_broken_rolls_back_and_pins(
        self,
        context: AppContext,
        client: httpx.AsyncClient,
        deployer: IssuedToken,
        admin: IssuedToken,
        staging: Env,
    ) -> None:
        first = await deploy(client, deployer, "1.1.0", ref="abc123", checklist=["code_review"])
        assert first.status_code == 201, first.text
        body = first.json()
        assert body["status"] == "success", body["failure"]
        assert body["services"] == [
            {"name": "backend", "version": "1.1.0", "previous_version": None, "changed": True}
        ]
        names = [s["name"] for s in body["steps"]]
        assert names[:5] == [
            "checklist",
            "pull backend",
            "deploy backend",
            "verify backend",
            "smoke backend: home",
        ]
        assert body["steps"][-1] == {**body["steps"][-1], "phase": "rollback", "status": "skipped"}
        assert await running_version(staging, "backend") == "1.1.0"

        broken = await deploy(client, deployer, "1.2.0-broken")
        assert broken.status_code == 201
        failed = broken.json()
        assert failed["status"] == "rolled_back"
        assert failed["failure"]["type"] == "/problems/health-check-failed"
        assert "rolled back: backend" in failed["failure"]["detail"]
        rollback_step = failed["steps"][-1]
        assert rollback_step["name"] == "rollback backend"
        assert rollback_step["status"] == "success"
        assert await running_version(staging, "backend") == "1.1.0"

        service = (
            await client.get("/v1/environments/staging/services/backend", headers=admin.headers)
        ).json()
        assert service["current_version"] == "1.1.0"
        assert service["last_deployment"]["id"] == failed["id"]
        assert [p["version"] for p in service["pins"]] == ["1.2.0-broken"]

        again = await deploy(client, deployer, "1.2.0-broken")
        assert again.status_code == 409
        assert again.json()["type"] == "/problems/version-pinned"

        evidence = await client.get(
            f"/v1/deployments/{failed['id']}/evidence", headers=deployer.headers
        )
        assert evidence.status_code == 200
        record = evidence.json()
        assert record["status"] == "rolled_back"
        assert record["rollback"]["triggered"] is True
        assert record["rollback"]["pins_created"] == [
            {"service": "backend", "version": "1.2.0-broken"}
        ]
        assert record["rollback"]["reason"]["type"] == "/problems/health-check-failed"
        assert record["request"]["version"] == "1.2.0-broken"
        assert len(record["sha256"]) == 64
        again_record = await client.get(
            f"/v1/deployments/{failed['id']}/evidence", headers=deployer.headers
        )
        assert again_record.json() == record

        operator_only = await client.delete(
            "/v1/environments/staging/services/backend/pins/1.2.0-broken",
            headers=deployer.headers,
        )
        assert operator_only.status_code == 403
        unpinned = await client.delete(
            "/v1/environments/staging/services/backend/pins/1.2.0-broken", headers=admin.headers
        )
        assert unpinned.status_code == 204
        dry = await deploy(client, deployer, "1.2.0-broken", dry_run=True)
        assert dry.status_code == 200

        async with context.sessionmaker() as session:
            types = list(
                await session.scalars(
                    select(OutboxEvent.type)
                    .where(OutboxEvent.type.like("deployment.%"))
                    .order_by(OutboxEvent.created_at, OutboxEvent.id)
                )
            )
        assert types == [
            "deployment.queued",
            "deployment.started",
            "deployment.succeeded",
            "deployment.queued",
            "deployment.started",
            "deployment.rolled_back",
        ]

    async def test_required_checklist_fails_fast_and_touches_nothing(
        self,
        client: httpx.AsyncClient,
        deployer: IssuedToken,
        admin: IssuedToken,
        staging: Env,
    ) -> None:
        await client.put(
            "/v1/environments/staging",
            json={"required_checklist": ["code_review", "tests_passed"]},
            headers=admin.headers,
        )
        dry = await deploy(client, deployer, "1.0.0", checklist=["code_review"], dry_run=True)
        assert dry.json()["checklist_missing"] == ["tests_passed"]
        response = await deploy(client, deployer, "1.0.0", checklist=["code_review"])
        body = response.json()
        assert body["status"] == "failure"
        assert body["failure"]["type"] == "/problems/checklist-incomplete"
        assert "tests_passed" in body["failure"]["detail"]
        assert [s["status"] for s in body["steps"][1:]] == ["skipped"] * (len(body["steps"]) - 1)
        assert await running_version(staging, "backend") is None

    async def test_several_services_in_deploy_order_and_frontend_failure_rolls_back_both(
        self, client: httpx.AsyncClient, deployer: IssuedToken, staging: Env
    ) -> None:
        both = {
            "services": [
                {"name": "frontend", "version": "2.0.0"},
                {"name": "backend", "version": "2.0.0"},
            ]
        }
        response = await client.post(
            "/v1/deployments",
            json={"environment": "staging", **both},
            headers={**deployer.headers, **WAIT},
            timeout=90,
        )
        body = response.json()
        assert body["status"] == "success", body["failure"]
        deploys = [s["name"] for s in body["steps"] if s["action"] == "deploy"]
        assert deploys == ["deploy backend", "deploy frontend"]

        mixed = {
            "services": [
                {"name": "backend", "version": "2.1.0"},
                {"name": "frontend", "version": "2.1.0-broken"},
            ]
        }
        response = await client.post(
            "/v1/deployments",
            json={"environment": "staging", **mixed},
            headers={**deployer.headers, **WAIT},
            timeout=90,
        )
        body = response.json()
        assert body["status"] == "rolled_back"
        rollbacks = [(s["name"], s["status"]) for s in body["steps"] if s["phase"] == "rollback"]
        assert rollbacks == [("rollback frontend", "success"), ("rollback backend", "success")]
        assert await running_version(staging, "backend") == "2.0.0"
        assert await running_version(staging, "frontend") == "2.0.0"

    async def test_manual_rollback_pins_and_restores(
        self, client: httpx.AsyncClient, deployer: IssuedToken, staging: Env
    ) -> None:
        assert (await deploy(client, deployer, "1.0.0")).json()["status"] == "success"
        second = (await deploy(client, deployer, "1.1.0")).json()
        assert second["services"][0]["previous_version"] == "1.0.0"
        response = await client.post(
            f"/v1/deployments/{second['id']}/rollback",
            headers={**deployer.headers, **WAIT},
            timeout=90,
        )
        assert response.status_code == 201, response.text
        rollback = response.json()
        assert rollback["kind"] == "rollback"
        assert rollback["rollback_of"] == second["id"]
        assert rollback["status"] == "success", rollback["failure"]
        assert await running_version(staging, "backend") == "1.0.0"
        assert (await deploy(client, deployer, "1.1.0")).status_code == 409
        twice = await client.post(
            f"/v1/deployments/{rollback['id']}/rollback", headers=deployer.headers
        )
        # Rolling the rollback back would bring back 1.1.0, which is pinned.
        assert twice.status_code == 409
        assert twice.json()["type"] == "/problems/version-pinned"

    async def test_cancel_in_progress_rolls_back(
        self,
        client: httpx.AsyncClient,
        deployer: IssuedToken,
        admin: IssuedToken,
        staging: Env,
    ) -> None:
        assert (await deploy(client, deployer, "1.0.0")).json()["status"] == "success"
        slow = {
            **(
                await client.get("/v1/environments/staging/services/backend", headers=admin.headers)
            ).json()
        }
        spec = {
            k: slow[k] for k in ("driver", "config", "health_url", "deploy_order", "smoke_tests")
        }
        await client.put(
            "/v1/environments/staging/services/backend",
            json={**spec, "settle_seconds": 2},
            headers=admin.headers,
        )
        created = await client.post(
            "/v1/deployments",
            json={"environment": "staging", "service": "backend", "version": "1.1.0"},
            headers=deployer.headers,
        )
        assert created.status_code == 202
        deployment_id = created.json()["id"]
        for _ in range(200):
            body = (
                await client.get(f"/v1/deployments/{deployment_id}", headers=deployer.headers)
            ).json()
            deploy_step = next(s for s in body["steps"] if s["action"] == "deploy")
            if deploy_step["status"] == "in_progress":
                break
            await asyncio.sleep(0.05)
        cancel = await client.post(
            f"/v1/deployments/{deployment_id}/cancel", headers=deployer.headers
        )
        assert cancel.status_code == 202
        done = (
            await client.get(
                f"/v1/deployments/{deployment_id}", params={"wait": 30}, headers=deployer.headers
            )
        ).json()
        assert done["status"] == "cancelled"
        assert "rolled back: backend" in done["failure"]["detail"]
        assert await running_version(staging, "backend") == "1.0.0"


@pytest.mark.usefixtures("worker")
async def test_idempotent_retry_never_deploys_twice(
    client: httpx.AsyncClient, deployer: IssuedToken, staging: Env
) -> None:
    headers = {**deployer.headers, "Idempotency-Key": "ci-run-42-attempt"}
    body = {"environment": "staging", "service": "backend", "version": "1.0.0"}
    first = await client.post("/v1/deployments", json=body, headers=headers)
    second = await client.post("/v1/deployments", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.headers["idempotent-replayed"] == "true"
    assert first.json()["id"] == second.json()["id"]
    listed = (await client.get("/v1/deployments", headers=deployer.headers)).json()
    assert len(listed["items"]) == 1
    done = await client.get(
        f"/v1/deployments/{first.json()['id']}", params={"wait": 60}, headers=deployer.headers
    )
    assert done.json()["status"] == "success"


async def test_dry_run_plans_and_writes_nothing(
    client: httpx.AsyncClient, deployer: IssuedToken, admin: IssuedToken, staging: Env
) -> None:
    await client.put("/v1/environments/staging", json={"database": "appdb"}, headers=admin.headers)
    response = await deploy(client, deployer, "3.0.0", dry_run=True)
    assert response.status_code == 200
    plan = response.json()
    assert plan["dry_run"] is True
    assert plan["queue_position"] == 0
    assert [s["name"] for s in plan["steps"]] == [
        "checklist",
        "backup appdb",
        "pull backend",
        "deploy backend",
        "verify backend",
        "smoke backend: home",
        "post-deploy backend",
        "rollback backend",
    ]
    assert plan["steps"][-1]["phase"] == "rollback"
    no_backup = await deploy(client, deployer, "3.0.0", dry_run=True, backup=False)
    assert "backup appdb" not in [s["name"] for s in no_backup.json()["steps"]]
    listed = (await client.get("/v1/deployments", headers=deployer.headers)).json()
    assert listed["items"] == []


async def test_bad_requests_are_problems(
    client: httpx.AsyncClient, deployer: IssuedToken, staging: Env
) -> None:
    cases = [
        ({"environment": "staging", "service": "backend"}, 422),
        ({"environment": "staging", "service": "nope", "version": "1"}, 404),
        ({"environment": "nowhere", "service": "backend", "version": "1"}, 404),
        ({"environment": "staging", "service": "backend", "version": "1 0"}, 422),
        ({"environment": "staging", "service": "backend", "version": "1", "checklist": ["x"]}, 422),
        (
            {
                "environment": "staging",
                "services": [{"name": "backend", "version": "1"}] * 2,
            },
            422,
        ),
    ]
    for body, status in cases:
        response = await client.post("/v1/deployments", json=body, headers=deployer.headers)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    missing = await client.get("/v1/deployments/nope", headers=deployer.headers)
    assert missing.status_code == 404


async def test_one_at_a_time_in_request_order(
    settings: Any, client: httpx.AsyncClient, deployer: IssuedToken, staging: Env
) -> None:
    """Created while no worker runs, so all queue; positions are visible; then three
    workers serve them one at a time, in order."""
    ids = []
    for i in range(6):
        response = await client.post(
            "/v1/deployments",
            json={"environment": "staging", "service": "backend", "version": f"1.0.{i}"},
            headers=deployer.headers,
        )
        ids.append(response.json()["id"])
    positions = [
        (await client.get(f"/v1/deployments/{i}", headers=deployer.headers)).json()[
            "queue_position"
        ]
        for i in ids
    ]
    assert positions == [0, 1, 2, 3, 4, 5]
    from workers.main import create_worker, stop_worker

    workers = [create_worker(settings, handle_signals=False, poll_delay=0.02) for _ in range(3)]
    tasks = [asyncio.create_task(w.main()) for w in workers]
    try:
        final = []
        for deployment_id in ids:
            body = (
                await client.get(
                    f"/v1/deployments/{deployment_id}",
                    params={"wait": 60},
                    headers=deployer.headers,
                )
            ).json()
            final.append(body)
    finally:
        for w, t in zip(workers, tasks, strict=True):
            await stop_worker(w, t)
    assert [b["status"] for b in final] == ["success"] * 6
    spans = [(b["started_at"], b["finished_at"]) for b in final]
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert finished <= started  # never two at once, and in request order
    assert await running_version(staging, "backend") == "1.0.5"


@pytest.mark.usefixtures("worker")
async def test_health_check_probes_the_deployed_services(
    client: httpx.AsyncClient, admin: IssuedToken, deployer: IssuedToken, staging: Env
) -> None:
    before = await client.post("/v1/health-checks", json={"dry_run": True}, headers=admin.headers)
    assert "service staging/backend" not in {s["name"] for s in before.json()["steps"]}
    both = [{"name": "backend", "version": "1.0.0"}, {"name": "frontend", "version": "1.0.0"}]
    deployed = await client.post(
        "/v1/deployments",
        json={"environment": "staging", "services": both},
        headers={**deployer.headers, **WAIT},
        timeout=90,
    )
    assert deployed.json()["status"] == "success"
    plan = await client.post("/v1/health-checks", json={"dry_run": True}, headers=admin.headers)
    probes = {s["name"]: s["params"].get("url") for s in plan.json()["steps"]}
    assert (
        probes["service staging/backend"] == f"http://127.0.0.1:{staging.ports['backend']}/health"
    )
    assert "service staging/frontend" in probes
    assert "service formula-ops" not in probes  # itself only when nothing else is known


async def test_every_service_the_schema_accepts_can_be_planned(
    client: httpx.AsyncClient, admin: IssuedToken, deployer: IssuedToken, staging: Env
) -> None:
    """A service stored at the limits of its schema does not make its deployments a 422
    (an HTTP smoke test may wait up to 600 s, so its step may too)."""
    port = staging.ports["backend"]
    limits = sample_service(
        port,
        smoke_tests=[
            {
                "name": "slow",
                "type": "http",
                "url": f"http://127.0.0.1:{port}/",
                "timeout_seconds": 600,
            },
            {"name": "cmd", "type": "command", "argv": ["true"], "timeout_seconds": 600},
        ],
    )
    stored = await client.put(
        "/v1/environments/staging/services/backend", json=limits, headers=admin.headers
    )
    assert stored.status_code == 200, stored.text
    planned = await deploy(client, deployer, "2.0.0", dry_run=True)
    assert planned.status_code == 200, planned.text
