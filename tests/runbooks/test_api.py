"""``/v1/runbooks``: the catalog as clients see it, and runs of a runbook executed by a
real worker (both control-plane backends)."""

from __future__ import annotations

import httpx
import pytest

from app.auth.roles import Role
from app.core.context import AppContext
from tests.backups.helpers import audit_actions, put_environment
from tests.factories import IssuedToken, issue_token

WAIT = {"Prefer": "wait=60"}


async def test_list_and_get(client: httpx.AsyncClient, context: AppContext) -> None:
    viewer = await issue_token(context, Role.VIEWER)
    listed = await client.get("/v1/runbooks?limit=200", headers=viewer.headers)
    assert listed.status_code == 200, listed.text
    names = [r["name"] for r in listed.json()["items"]]
    assert names == sorted(names)
    assert "test-echo" in names
    page = await client.get("/v1/runbooks?limit=1", headers=viewer.headers)
    assert len(page.json()["items"]) == 1
    assert page.json()["next_cursor"] == names[0]
    rest = await client.get(f"/v1/runbooks?cursor={names[0]}", headers=viewer.headers)
    assert rest.json()["items"][0]["name"] == names[1]
    one = await client.get("/v1/runbooks/test-echo", headers=viewer.headers)
    body = one.json()
    assert body["role"] == "operator"
    assert body["kind"] == "maintenance"
    assert body["parameters"]["required"] == ["message"]
    assert body["parameters"]["properties"]["count"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 2,
        "default": 0,
    }
    assert body["steps"][0]["with"]["argv"][2] == {"param": "message"}
    assert body["steps"][2]["when"] == {"param": "loud", "equals": True}
    missing = await client.get("/v1/runbooks/no-such", headers=viewer.headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = await client.get("/v1/runbooks?cursor=..%2F", headers=viewer.headers)
    assert bad.status_code == 422


@pytest.mark.usefixtures("worker")
async def test_a_run_executes_its_steps_and_sums_them_up(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    operator = await issue_token(context, Role.OPERATOR)
    payload = "it's $(id) `x` ; rm -rf / && echo"
    response = await client.post(
        "/v1/runbooks/test-echo/runs",
        json={"parameters": {"message": payload, "loud": True, "tone": "fancy"}},
        headers={**operator.headers, **WAIT},
    )
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["kind"] == "maintenance"
    assert run["status"] == "success"
    assert run["runbook"] == {
        "name": "test-echo",
        "parameters": {"message": payload, "count": 0, "loud": True, "tone": "fancy"},
    }
    steps = {s["name"]: s for s in run["steps"]}
    assert steps["print the message"]["output"] == f"{payload}|fancy\n"
    assert steps["shout"]["status"] == "success"
    assert steps["may fail and go on"]["status"] == "failure"
    assert run["result"]["level"] == "warning"
    assert run["result"]["failed_steps"] == ["may fail and go on"]
    assert "4. may fail and go on: failed:" in run["result"]["summary"]
    assert response.headers["location"] == f"/v1/runs/{run['id']}"
    assert await audit_actions(context, run["id"]) == ["runbook.run"]


async def test_dry_run_returns_the_plan(client: httpx.AsyncClient, context: AppContext) -> None:
    operator = await issue_token(context, Role.OPERATOR)
    response = await client.post(
        "/v1/runbooks/test-echo/runs",
        json={"parameters": {"message": "hi"}, "dry_run": True},
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text
    dry = response.json()
    assert dry["dry_run"] is True
    assert dry["runbook"] == "test-echo"
    assert [s["name"] for s in dry["steps"]] == ["print the message", "pause", "may fail and go on"]
    assert dry["steps"][0]["params"]["argv"] == ["printf", "%s|%s\n", "hi", "plain"]
    async with context.sessionmaker() as session:
        from sqlalchemy import func, select

        from app.runs.models import Run

        assert await session.scalar(select(func.count()).select_from(Run)) == 0


async def test_refusals_are_problems(client: httpx.AsyncClient, context: AppContext) -> None:
    deployer = await issue_token(context, Role.DEPLOYER)
    operator = await issue_token(context, Role.OPERATOR)
    admin = await issue_token(context, Role.ADMIN)
    cases: list[tuple[IssuedToken, str, object, int]] = [
        (deployer, "test-echo", {"parameters": {"message": "x"}}, 403),
        (operator, "test-admin-only", {"parameters": {"environment": "staging"}}, 403),
        (operator, "no-such-runbook", {}, 404),
        (operator, "test-echo", {"parameters": {}}, 422),
        (operator, "test-echo", {"parameters": {"message": "x", "count": 3}}, 422),
        (operator, "test-echo", {"parameters": {"message": "x", "count": "1"}}, 422),
        (operator, "test-echo", {"parameters": {"message": "x", "loud": "yes"}}, 422),
        (operator, "test-echo", {"parameters": {"message": "x", "tone": "loud"}}, 422),
        (operator, "test-echo", {"parameters": {"message": "x", "nope": 1}}, 422),
        (operator, "test-echo", {"parameters": {"message": ["x"]}}, 422),
        (operator, "test-echo", {"parameters": {"message": "x" * 201}}, 422),
        (operator, "test-echo", {"parameters": {"message": "a\x00b"}}, 422),
        (operator, "test-echo", {"parameters": "x"}, 422),
        (admin, "test-admin-only", {"parameters": {"environment": "nowhere"}}, 404),
        (admin, "Bad_Name", {}, 422),
    ]
    for token, name, body, status in cases:
        response = await client.post(f"/v1/runbooks/{name}/runs", json=body, headers=token.headers)
        assert response.status_code == status, (name, body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "rm -rf" not in response.text


async def test_environment_scoped_tokens(client: httpx.AsyncClient, context: AppContext) -> None:
    admin = await issue_token(context, Role.ADMIN)
    await put_environment(client, admin, "staging")
    await put_environment(client, admin, "production")
    scoped = await issue_token(context, Role.ADMIN, environment="staging")
    ok = await client.post(
        "/v1/runbooks/test-admin-only/runs",
        json={"parameters": {"environment": "staging"}},
        headers=scoped.headers,
    )
    assert ok.status_code == 202, ok.text
    assert ok.json()["environment"] == "staging"
    other = await client.post(
        "/v1/runbooks/test-admin-only/runs",
        json={"parameters": {"environment": "production"}},
        headers=scoped.headers,
    )
    assert other.status_code == 404
    no_env = await client.post(
        "/v1/runbooks/test-echo/runs", json={"parameters": {"message": "x"}}, headers=scoped.headers
    )
    assert no_env.status_code == 403


async def test_idempotent_creation(client: httpx.AsyncClient, context: AppContext) -> None:
    operator = await issue_token(context, Role.OPERATOR)
    headers = {**operator.headers, "Idempotency-Key": "runbook-key-1"}
    body = {"parameters": {"message": "once"}}
    first = await client.post("/v1/runbooks/test-echo/runs", json=body, headers=headers)
    again = await client.post("/v1/runbooks/test-echo/runs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = await client.post(
        "/v1/runbooks/test-echo/runs", json={"parameters": {"message": "twice"}}, headers=headers
    )
    assert other.status_code == 422


@pytest.mark.usefixtures("worker")
async def test_child_runs_are_started_once_and_followed(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    operator = await issue_token(context, Role.OPERATOR)
    response = await client.post(
        "/v1/runbooks/test-children/runs", json={}, headers={**operator.headers, **WAIT}
    )
    assert response.status_code == 201, response.text
    run = response.json()
    steps = {s["name"]: s for s in run["steps"]}
    health, backup = steps["health check"]["result"], steps["backup"]["result"]
    assert health["kind"] == "health_check"
    assert backup["kind"] == "backup"
    assert backup["status"] == "success", steps["backup"]
    for child in (health, backup):
        got = await client.get(f"/v1/runs/{child['run_id']}", headers=operator.headers)
        assert got.json()["requested_by"].startswith(f"run:{run['id']}:")
        assert got.json()["status"] == child["status"]
    listed = await client.get("/v1/backups", headers=operator.headers)
    assert [b["id"] for b in listed.json()["items"]] == [backup["run_id"]]
