"""A token limited to `alerts`: created by an admin, shown with its scope, refused
everywhere but the Alertmanager receiver (the route walk in tests/test_route_scopes.py
checks every route)."""

from __future__ import annotations

import httpx

from app.auth.roles import Role
from app.core.context import AppContext
from tests.factories import IssuedToken, issue_token


async def test_an_admin_creates_an_alerts_token(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    response = await client.post(
        "/v1/tokens",
        json={"name": "alertmanager", "role": "operator", "scope": "alerts"},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["scope"] == "alerts"
    fetched = await client.get(f"/v1/tokens/{created['id']}", headers=admin.headers)
    assert fetched.json()["scope"] == "alerts"
    listed = await client.get("/v1/tokens", headers=admin.headers)
    scopes = {t["id"]: t["scope"] for t in listed.json()["items"]}
    assert scopes == {admin.id: None, created["id"]: "alerts"}
    audit = await client.get("/v1/audit-events?action=token.create", headers=admin.headers)
    summaries = [e["summary"] for e in audit.json()["items"]]
    assert any(s.get("scope") == "alerts" for s in summaries), summaries

    alerts_token = {"Authorization": f"Bearer {created['token']}"}
    refused = await client.get("/v1/tokens", headers=alerts_token)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "alerts" in refused.json()["detail"]


async def test_bad_scopes_are_refused(client: httpx.AsyncClient, admin: IssuedToken) -> None:
    for body in (
        {"name": "x", "role": "operator", "scope": "everything"},
        {"name": "x", "role": "operator", "scope": ""},
        {"name": "x", "role": "operator", "scope": "alerts", "environment": "production"},
    ):
        response = await client.post("/v1/tokens", json=body, headers=admin.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"


async def test_an_alerts_token_of_any_role_reads_and_changes_nothing(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    for role in Role:
        token = await issue_token(context, role, scope="alerts")
        for method, path in (
            ("GET", "/v1/runs"),
            ("GET", "/v1/audit-events"),
            ("POST", "/v1/health-checks"),
            ("GET", "/v1/environments"),
            ("POST", "/v1/tokens"),
        ):
            response = await client.request(method, path, json={}, headers=token.headers)
            assert response.status_code == 403, (role, method, path, response.text)


async def test_metrics_made_private_refuse_an_alerts_token(context: AppContext) -> None:
    from tests.factories import app_with

    app = app_with(context, metrics_public=False)
    token = await issue_token(context, Role.ADMIN, scope="alerts")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/metrics", headers=token.headers)
    assert response.status_code == 403
