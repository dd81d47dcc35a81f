"""An environment's ``prometheus_url`` and a service's ``metrics_url`` (where
post-deployment verification measures): http(s) URLs only, written by admins, their
userinfo shown to admins only and never stored in audit records or deployment plans."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.core.context import AppContext
from app.models import AuditEvent
from tests.factories import IssuedToken, issue_token, sample_service

PROMETHEUS = "http://verify:pr0m-s3cret@127.0.0.1:9090/prometheus"
NAME = "metrics-sources"  # audit rows of other tests stay: this test's own name
METRICS = "https://scrape:m3trics-s3cret@127.0.0.1:8443/metrics?format=text"


async def test_written_by_admins_shown_redacted_to_others(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    created = await client.put(
        f"/v1/environments/{NAME}", json={"prometheus_url": PROMETHEUS}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["prometheus_url"] == PROMETHEUS
    service = await client.put(
        f"/v1/environments/{NAME}/services/api",
        json={**sample_service(8080), "metrics_url": METRICS},
        headers=admin.headers,
    )
    assert service.status_code == 201, service.text
    assert service.json()["metrics_url"] == METRICS

    viewer = await issue_token(context, Role.VIEWER)
    environment = (await client.get(f"/v1/environments/{NAME}", headers=viewer.headers)).json()
    assert environment["prometheus_url"] == "http://[redacted]@127.0.0.1:9090/prometheus"
    assert environment["services"][0]["metrics_url"] == (
        "https://[redacted]@127.0.0.1:8443/metrics?format=text"
    )
    listed = await client.get("/v1/environments", headers=viewer.headers)
    one = await client.get(f"/v1/environments/{NAME}/services/api", headers=viewer.headers)
    for text in (listed.text, one.text):
        assert "pr0m-s3cret" not in text
        assert "m3trics-s3cret" not in text
    as_admin = await client.get(f"/v1/environments/{NAME}", headers=admin.headers)
    assert as_admin.json()["prometheus_url"] == PROMETHEUS

    deployer = await issue_token(context, Role.DEPLOYER)
    plan = await client.post(
        "/v1/deployments",
        json={"environment": NAME, "service": "api", "version": "1", "dry_run": True},
        headers=deployer.headers,
    )
    assert plan.status_code == 200, plan.text
    assert "s3cret" not in plan.text
    async with context.sessionmaker() as session:
        summaries = list(
            await session.scalars(
                select(AuditEvent.summary).where(AuditEvent.resource_id.in_((NAME, f"{NAME}/api")))
            )
        )
    assert len(summaries) == 2
    assert "s3cret" not in str(summaries)
    assert "[redacted]@127.0.0.1:9090" in str(summaries)

    cleared = await client.put(
        f"/v1/environments/{NAME}", json={}, headers={**admin.headers, "If-Match": '"1"'}
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["prometheus_url"] is None  # PUT replaces


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/metrics",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "javascript:alert(1)",
        "127.0.0.1:9090",
        "http://127.0.0.1:9090/\nHost: x",
        "http://" + "a" * 2000,
    ],
)
async def test_only_http_and_https_urls(
    client: httpx.AsyncClient, admin: IssuedToken, url: str
) -> None:
    refused = await client.put(
        "/v1/environments/qa", json={"prometheus_url": url}, headers=admin.headers
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["errors"][0]["loc"][-1] == "prometheus_url"
    await client.put("/v1/environments/qa", json={}, headers=admin.headers)
    refused = await client.put(
        "/v1/environments/qa/services/api",
        json={**sample_service(8080), "metrics_url": url},
        headers=admin.headers,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"][-1] == "metrics_url"
