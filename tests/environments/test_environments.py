"""``/v1/environments``: admin changes with ETag / If-Match, viewers read, scoped tokens
see their own environment only, driver configs are checked."""

from __future__ import annotations

import dataclasses

import httpx

from app.auth.roles import Role
from app.core.context import AppContext
from app.core.settings import DockerSettings
from app.main import create_app
from app.models import AuditEvent
from tests.factories import IssuedToken, issue_token, sample_service


async def test_create_read_replace_with_etags(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    created = await client.post(
        "/v1/environments",
        json={"name": "production", "database": "app", "required_checklist": ["code_review"]},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/environments/production"
    etag = created.headers["etag"]
    assert created.json()["revision"] == 1

    again = await client.post(
        "/v1/environments", json={"name": "production"}, headers=admin.headers
    )
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/environment-exists"

    read = await client.get("/v1/environments/production", headers=admin.headers)
    assert read.headers["etag"] == etag
    assert read.json()["required_checklist"] == ["code_review"]

    updated = await client.put(
        "/v1/environments/production",
        json={"description": "live", "database": "app"},
        headers={**admin.headers, "If-Match": etag},
    )
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] != etag
    assert updated.json()["required_checklist"] == []

    stale = await client.put(
        "/v1/environments/production",
        json={"description": "stale"},
        headers={**admin.headers, "If-Match": etag},
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    current = await client.get("/v1/environments/production", headers=admin.headers)
    assert current.json()["description"] == "live"


async def test_services_are_checked_by_their_driver(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    await client.put("/v1/environments/qa", json={}, headers=admin.headers)
    bad = await client.put(
        "/v1/environments/qa/services/api",
        json={"driver": "process", "config": {"command": []}},
        headers=admin.headers,
    )
    assert bad.status_code == 422
    assert "config" in bad.json()["errors"][0]["loc"]
    docker_tagged = await client.put(
        "/v1/environments/qa/services/web",
        json={"driver": "docker", "config": {"image": "registry.local/web:1.0"}},
        headers=admin.headers,
    )
    assert docker_tagged.status_code == 422
    unknown_field = await client.put(
        "/v1/environments/qa/services/api",
        json={**sample_service(8080), "colour": "blue"},
        headers=admin.headers,
    )
    assert unknown_field.status_code == 422
    good = await client.put(
        "/v1/environments/qa/services/api", json=sample_service(8080), headers=admin.headers
    )
    assert good.status_code == 201, good.text
    body = good.json()
    assert body["current_version"] is None
    assert body["pins"] == []
    stale = await client.put(
        "/v1/environments/qa/services/api",
        json=sample_service(8081),
        headers={**admin.headers, "If-Match": '"7"'},
    )
    assert stale.status_code == 412
    listed = await client.get("/v1/environments/qa/services", headers=admin.headers)
    assert [s["name"] for s in listed.json()["items"]] == ["api"]
    env = await client.get("/v1/environments/qa", headers=admin.headers)
    assert [s["name"] for s in env.json()["services"]] == ["api"]
    missing = await client.put(
        "/v1/environments/nowhere/services/api", json=sample_service(1), headers=admin.headers
    )
    assert missing.status_code == 404


async def test_roles_and_scopes(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    for name in ("qa", "prod"):
        await client.put(f"/v1/environments/{name}", json={}, headers=admin.headers)
    viewer = await issue_token(context, Role.VIEWER)
    assert (await client.get("/v1/environments", headers=viewer.headers)).status_code == 200
    secret = {
        **sample_service(8080),
        "config": {"command": ["x"], "env": {"DB_PASSWORD": "s3cr3t"}},
    }
    await client.put("/v1/environments/qa/services/api", json=secret, headers=admin.headers)
    as_viewer = await client.get("/v1/environments/qa/services/api", headers=viewer.headers)
    assert as_viewer.json()["config"]["env"] == {"DB_PASSWORD": "[redacted]"}
    assert "s3cr3t" not in (await client.get("/v1/environments/qa", headers=viewer.headers)).text
    as_admin = await client.get("/v1/environments/qa/services/api", headers=admin.headers)
    assert as_admin.json()["config"]["env"] == {"DB_PASSWORD": "s3cr3t"}
    deployer = await issue_token(context, Role.DEPLOYER)
    plan = await client.post(
        "/v1/deployments",
        json={"environment": "qa", "service": "api", "version": "1", "dry_run": True},
        headers=deployer.headers,
    )
    assert plan.status_code == 200, plan.text
    assert "s3cr3t" not in plan.text
    denied = await client.put("/v1/environments/qa", json={}, headers=viewer.headers)
    assert denied.status_code == 403
    scoped = await issue_token(context, Role.DEPLOYER, environment="qa")
    listed = await client.get("/v1/environments", headers=scoped.headers)
    assert [e["name"] for e in listed.json()["items"]] == ["qa"]
    hidden = await client.get("/v1/environments/prod", headers=scoped.headers)
    assert hidden.status_code == 404


async def test_delete_and_audit(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    created = await client.put("/v1/environments/temp", json={}, headers=admin.headers)
    await client.put(
        "/v1/environments/temp/services/api", json=sample_service(8080), headers=admin.headers
    )
    stale = await client.delete(
        "/v1/environments/temp", headers={**admin.headers, "If-Match": '"99"'}
    )
    assert stale.status_code == 412
    deleted = await client.delete(
        "/v1/environments/temp", headers={**admin.headers, "If-Match": created.headers["etag"]}
    )
    assert deleted.status_code == 204
    assert (await client.get("/v1/environments/temp", headers=admin.headers)).status_code == 404
    from sqlalchemy import select

    async with context.sessionmaker() as session:
        actions = list(
            await session.scalars(
                select(AuditEvent.action).where(AuditEvent.resource_id.like("temp%"))
            )
        )
    assert {"environment.create", "service.create", "environment.delete"} <= set(actions)


async def test_what_a_queued_deployment_changes_cannot_be_deleted(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    """The deployments domain holds its services (wired by the composition root): the
    environment and the deployed service are refused (409) until the deployment ends;
    a service it does not change can go."""
    await client.put("/v1/environments/temp", json={}, headers=admin.headers)
    for name, port in (("api", 8080), ("web", 8081)):
        await client.put(
            f"/v1/environments/temp/services/{name}",
            json=sample_service(port),
            headers=admin.headers,
        )
    queued = await client.post(  # no worker: it stays queued
        "/v1/deployments",
        json={"environment": "temp", "service": "api", "version": "2.0.0"},
        headers=admin.headers,
    )
    assert queued.status_code == 202, queued.text

    for path in ("/v1/environments/temp/services/api", "/v1/environments/temp"):
        refused = await client.delete(path, headers=admin.headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"] == "/problems/deployments-active"
    other = await client.delete("/v1/environments/temp/services/web", headers=admin.headers)
    assert other.status_code == 204, other.text

    cancelled = await client.post(
        f"/v1/deployments/{queued.json()['id']}/cancel", headers=admin.headers
    )
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    for path in ("/v1/environments/temp/services/api", "/v1/environments/temp"):
        deleted = await client.delete(path, headers=admin.headers)
        assert deleted.status_code == 204, deleted.text


async def test_paginated(client: httpx.AsyncClient, admin: IssuedToken) -> None:
    for i in range(5):
        await client.put(f"/v1/environments/env-{i}", json={}, headers=admin.headers)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/environments", params=params, headers=admin.headers)).json()
        seen += [e["name"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"env-{i}" for i in range(5)]
    assert len(seen) == 5


async def test_docker_privileges_need_the_server_setting(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    await client.put("/v1/environments/qa", json={}, headers=admin.headers)
    host = {"driver": "docker", "config": {"image": "registry.local/web", "network": "host"}}
    socket = {
        "driver": "docker",
        "config": {
            "image": "registry.local/web",
            "mounts": {"/s": {"type": "bind", "source": "/var/run/docker.sock"}},
        },
    }
    refused = await client.put("/v1/environments/qa/services/web", json=host, headers=admin.headers)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "/problems/validation-error"
    assert problem["errors"][0]["loc"] == ["body", "config", "network"]
    assert "FORMULA_OPS_DOCKER__ALLOW_HOST_NETWORK=true" in problem["detail"]
    bind = await client.put("/v1/environments/qa/services/web", json=socket, headers=admin.headers)
    assert bind.status_code == 422, bind.text
    assert bind.json()["errors"][0]["loc"] == ["body", "config", "mounts", "/s", "source"]
    missing = await client.get("/v1/environments/qa/services/web", headers=admin.headers)
    assert missing.status_code == 404

    # The same requests to a server whose settings allow them.
    allowing = context.settings.model_copy(
        update={"docker": DockerSettings(allow_host_network=True, allow_sensitive_binds=True)}
    )
    app = create_app(allowing, context=dataclasses.replace(context, settings=allowing))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as allowed:
        created = await allowed.put(
            "/v1/environments/qa/services/web", json=host, headers=admin.headers
        )
        assert created.status_code == 201, created.text
        assert created.json()["config"]["network"] == "host"
        created = await allowed.put(
            "/v1/environments/qa/services/api", json=socket, headers=admin.headers
        )
        assert created.status_code == 201, created.text


async def test_if_match_takes_the_entity_tag_syntax_it_declares(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    """RFC 9110 `If-Match`: `*`, `"…"`, `W/"…"` and lists of them are conditions (met or
    412); anything else, `null` included, is a malformed header (422), never a 412."""
    created = await client.post("/v1/environments", json={"name": "prod"}, headers=admin.headers)
    etag = created.headers["etag"]

    async def put(if_match: str) -> httpx.Response:
        return await client.put(
            "/v1/environments/prod", json={}, headers={**admin.headers, "If-Match": if_match}
        )

    for malformed in ("null", "1", etag[1:], f"{etag},", f"W/ {etag}", '"a"b"'):
        response = await put(malformed)
        assert response.status_code == 422, (malformed, response.text)
        assert response.json()["errors"][0]["loc"] == ["header", "If-Match"]
    assert (await put('"nope", W/"x"')).status_code == 412
    current = (await client.get("/v1/environments/prod", headers=admin.headers)).headers["etag"]
    assert (await put(f'"0" ,\tW/{current}')).status_code == 200
    assert (await put("*")).status_code == 200
