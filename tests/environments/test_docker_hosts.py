"""An environment's Docker hosts and application Redis through ``/v1/environments``:
validation (422, never 500), the client key and URL userinfo hidden from all but admins
and from the audit trail, and services naming a docker host by name."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.core.context import AppContext
from app.models import AuditEvent
from tests.factories import IssuedToken, issue_token

pytestmark = pytest.mark.one_backend("sqlite")

# Shapes of PEM texts: the API checks the armour, the engine the contents.
CERT = (
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
)
KEY_BODY = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSECRETKEYMATERIAL"
KEY = f"-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----\n"
TLS = {"ca_cert": CERT, "client_cert": CERT, "client_key": KEY}
REDIS_PASSWORD = "r3dis-Pa55word"


def body(**extra: Any) -> dict[str, Any]:
    return {
        "docker_hosts": [
            {"name": "prod-1", "url": "tcp://10.0.0.5:2376", "tls": TLS},
            {"name": "prod-2", "url": "ssh://deploy@10.0.0.6:2222"},
            {"name": "tunnel", "url": "tcp://127.0.0.1:23750"},
            {"name": "sock", "url": "unix:///run/user/1000/docker.sock"},
        ],
        "redis_url": f"redis://app:{REDIS_PASSWORD}@10.0.0.7:6379/0",
        **extra,
    }


async def test_admins_read_docker_hosts_others_never_the_key(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    created = await client.put("/v1/environments/prod", json=body(), headers=admin.headers)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert shown["docker_hosts"][0]["tls"]["client_key"] == KEY
    assert shown["redis_url"] == f"redis://app:{REDIS_PASSWORD}@10.0.0.7:6379/0"
    assert shown["docker_hosts"][1] == {
        "name": "prod-2",
        "url": "ssh://deploy@10.0.0.6:2222",
        "tls": None,
    }

    viewer = await issue_token(context, Role.VIEWER)
    for path in ("/v1/environments/prod", "/v1/environments"):
        response = await client.get(path, headers=viewer.headers)
        assert response.status_code == 200
        text = response.text
        assert KEY_BODY not in text
        assert "PRIVATE KEY" not in text
        assert REDIS_PASSWORD not in text
    seen = (await client.get("/v1/environments/prod", headers=viewer.headers)).json()
    assert seen["docker_hosts"][0]["tls"]["client_key"] == "[redacted]"
    assert seen["docker_hosts"][0]["tls"]["ca_cert"] == CERT  # certificates are public
    assert seen["docker_hosts"][0]["url"] == "tcp://10.0.0.5:2376"
    assert seen["redis_url"] == "redis://[redacted]@10.0.0.7:6379/0"

    async with context.sessionmaker() as session:
        summaries = list(
            await session.scalars(
                select(AuditEvent.summary).where(AuditEvent.resource_id == "prod")
            )
        )
    assert summaries
    stored = json.dumps(summaries)
    assert KEY_BODY not in stored
    assert REDIS_PASSWORD not in stored
    assert "prod-1" in stored  # the hosts are recorded, without their key


INVALID: list[tuple[list[dict[str, Any]], str | None, str]] = [
    ([{"name": "far", "url": "tcp://10.0.0.5:2375"}], None, "needs tls"),
    ([{"name": "s", "url": "ssh://deploy@h", "tls": TLS}], None, "tcp:// URLs only"),
    ([{"name": "s", "url": "ssh://deploy:pw@h"}], None, "pattern"),
    ([{"name": "h", "url": "http://h:2375"}], None, "pattern"),
    ([{"name": "h", "url": "tcp://h"}], None, "pattern"),
    ([{"name": "Bad_Name", "url": "unix:///d.sock"}], None, "pattern"),
    (
        [{"name": "a", "url": "unix:///a.sock"}, {"name": "a", "url": "unix:///b.sock"}],
        None,
        "unique",
    ),
    (
        [{"name": "t", "url": "tcp://h:2376", "tls": {**TLS, "client_key": "secret"}}],
        None,
        "pattern",
    ),
    (
        [{"name": "t", "url": "tcp://h:2376", "tls": {**TLS, "client_key": CERT}}],
        None,
        "pattern",
    ),
    ([], "http://cache:6379", "pattern"),
    ([], "redis://a:b@c@cache:6379", "pattern"),
]


async def test_invalid_docker_hosts_and_redis_urls_are_422(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    for hosts, redis_url, message in INVALID:
        response = await client.put(
            "/v1/environments/bad",
            json={"docker_hosts": hosts, "redis_url": redis_url},
            headers=admin.headers,
        )
        assert response.status_code == 422, (hosts, redis_url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert message in response.text, (hosts, redis_url, response.text)
        assert KEY_BODY not in response.text
    missing = await client.get("/v1/environments/bad", headers=admin.headers)
    assert missing.status_code == 404


def docker_service(docker_host: str) -> dict[str, Any]:
    return {
        "driver": "docker",
        "config": {"image": "registry.example/app", "docker_host": docker_host},
    }


async def test_a_service_names_one_of_its_environments_docker_hosts(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    await client.put("/v1/environments/prod", json=body(), headers=admin.headers)
    named = await client.put(
        "/v1/environments/prod/services/web", json=docker_service("prod-1"), headers=admin.headers
    )
    assert named.status_code == 201, named.text
    assert named.json()["config"]["docker_host"] == "prod-1"
    url = await client.put(
        "/v1/environments/prod/services/api",
        json=docker_service("tcp://127.0.0.1:2375"),
        headers=admin.headers,
    )
    assert url.status_code == 201, url.text

    unknown = await client.put(
        "/v1/environments/prod/services/jobs", json=docker_service("prod-9"), headers=admin.headers
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["loc"] == ["body", "config", "docker_host"]
    assert "prod-9" in unknown.json()["detail"]

    # The host a service names cannot be dropped from under it.
    current = await client.get("/v1/environments/prod", headers=admin.headers)
    hosts = [h for h in current.json()["docker_hosts"] if h["name"] != "prod-1"]
    dropped = await client.put(
        "/v1/environments/prod",
        json={"docker_hosts": hosts, "redis_url": current.json()["redis_url"]},
        headers=admin.headers,
    )
    assert dropped.status_code == 422
    assert "web (prod-1)" in dropped.json()["detail"]
    kept = await client.put(
        "/v1/environments/prod", json=body(description="same hosts"), headers=admin.headers
    )
    assert kept.status_code == 200, kept.text
