"""Post-deployment verification against the thresholds, end to end: a real worker, the
real ``process`` driver running the sample service, its ``/metrics`` scraped over the
settle window while the test sends it traffic (as users would).

A version ending with ``-errors`` answers 500 to one request in five (20 %): above the
error-rate threshold's critical level (5 %), so the deployment is rolled back and its
evidence names the threshold and the measured value."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.core.context import AppContext
from tests.deployments.conftest import running_version
from tests.factories import IssuedToken, sample_service
from tests.helpers import free_port, stop_services

WAIT = {"Prefer": "wait=90"}
SETTLE = 2.0
# What is graded is the metrics source's answer, not the control plane's database.
pytestmark = [pytest.mark.slow, pytest.mark.one_backend("sqlite")]


@contextlib.asynccontextmanager
async def traffic(port: int) -> AsyncIterator[list[int]]:
    """Requests to the service's home page, one after another, until the block ends;
    yields the status codes seen (connection errors while it restarts are skipped)."""
    seen: list[int] = []

    async def send() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    seen.append((await http.get(f"http://127.0.0.1:{port}/")).status_code)
                await asyncio.sleep(0.01)

    task = asyncio.create_task(send())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def put_service(
    client: httpx.AsyncClient, admin: IssuedToken, port: int, **extra: Any
) -> None:
    body = sample_service(port, settle=SETTLE, smoke_tests=[], **extra)
    response = await client.put(
        "/v1/environments/staging/services/backend", json=body, headers=admin.headers
    )
    assert response.status_code in (200, 201), response.text


async def deploy(client: httpx.AsyncClient, token: IssuedToken, version: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/deployments",
        json={"environment": "staging", "service": "backend", "version": version},
        headers={**token.headers, **WAIT},
        timeout=120,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def post_deploy(body: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in body["steps"] if s["name"] == "post-deploy backend"]
    return step


@pytest.fixture
async def port(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken
) -> AsyncIterator[int]:
    """``staging`` with a ``backend`` service (the sample service) on a free port."""
    response = await client.put(
        "/v1/environments/staging", json={"description": "tests"}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    yield free_port()
    await stop_services(context)


@pytest.mark.usefixtures("worker")
class TestMetricsEndpoint:
    async def test_error_rate_over_critical_rolls_back_and_the_evidence_names_it(
        self,
        client: httpx.AsyncClient,
        deployer: IssuedToken,
        admin: IssuedToken,
        port: int,
    ) -> None:
        await put_service(client, admin, port, metrics_url=f"http://127.0.0.1:{port}/metrics")
        async with traffic(port) as seen:
            healthy = await deploy(client, deployer, "1.0.0")
            assert healthy["status"] == "success", healthy["failure"]
            step = post_deploy(healthy)["result"]
            assert step["error_rate"] == 0.0
            assert isinstance(step["latency_p95"], float)
            checked = step["verification"]
            assert checked["source"] == "metrics"
            assert checked["window_seconds"] == SETTLE
            rates = {m["threshold"]: m for m in checked["measurements"]}
            assert rates["error_rate"]["grade"] == "ok"
            assert rates["error_rate"]["critical"] == 5.0
            assert rates["latency_p95"]["grade"] == "ok"

            broken = await deploy(client, deployer, "1.1.0-errors")
        assert 500 in seen
        assert 200 in seen
        assert broken["status"] == "rolled_back"
        assert broken["failure"]["type"] == "/problems/threshold-breached"
        detail = broken["failure"]["detail"]
        assert "threshold breached: error_rate" in detail, detail
        assert "critical > 5%" in detail, detail
        failed = post_deploy(broken)
        assert failed["status"] == "failure"
        breached = failed["result"]["breached"]
        assert breached["threshold"] == "error_rate"
        assert breached["source"] == "metrics"
        assert breached["critical"] == 5.0
        # One request in five answers 500: every window of the test's traffic holds 20 %
        # give or take one request.
        assert 15.0 <= breached["value"] <= 25.0, breached
        assert f"{breached['value']:g}%" in detail
        assert await running_version_of(port) == "1.0.0"

        evidence = await client.get(
            f"/v1/deployments/{broken['id']}/evidence", headers=deployer.headers
        )
        record = evidence.json()
        assert record["failure"]["type"] == "/problems/threshold-breached"
        assert record["rollback"]["triggered"] is True
        assert record["rollback"]["reason"]["type"] == "/problems/threshold-breached"
        assert record["rollback"]["pins_created"] == [
            {"service": "backend", "version": "1.1.0-errors"}
        ]
        (evidence_step,) = [s for s in record["health"] if s["name"] == "post-deploy backend"]
        assert evidence_step["result"]["breached"] == breached
        assert "error_rate" in record["failure"]["detail"]
        assert f"{breached['value']:g}%" in record["failure"]["detail"]

    async def test_warning_is_recorded_and_passes(
        self, client: httpx.AsyncClient, deployer: IssuedToken, admin: IssuedToken, port: int
    ) -> None:
        config = {
            "command": ["{python}", "-m", "app.embedded.sample_service"],
            "port": port,
            "env": {"ERROR_PERCENT": "3"},
        }
        await put_service(
            client, admin, port, config=config, metrics_url=f"http://127.0.0.1:{port}/metrics"
        )
        async with traffic(port):
            body = await deploy(client, deployer, "2.0.0")
        assert body["status"] == "success", body["failure"]
        step = post_deploy(body)
        assert step["status"] == "success"
        assert step["output"].startswith("thresholds: warning")
        (rate,) = [
            m
            for m in step["result"]["verification"]["measurements"]
            if m["threshold"] == "error_rate"
        ]
        assert rate["grade"] == "warning"
        assert 1.0 < rate["value"] <= 5.0


async def running_version_of(port: int) -> str | None:
    from tests.deployments.conftest import Env

    return await running_version(Env("staging", {"backend": port}), "backend")


@pytest.mark.usefixtures("worker")
async def test_not_measured_without_a_source_or_without_traffic(
    client: httpx.AsyncClient, deployer: IssuedToken, admin: IssuedToken, port: int
) -> None:
    await put_service(client, admin, port)
    body = await deploy(client, deployer, "1.0.0-errors")
    assert body["status"] == "success", body["failure"]  # nothing measured: nothing breached
    step = post_deploy(body)
    assert step["result"]["error_rate"] == (
        "not measured: no metrics source is configured for this service"
    )
    assert step["result"]["verification"]["source"] is None
    assert step["output"].startswith("thresholds: not measured")

    await put_service(client, admin, port, metrics_url=f"http://127.0.0.1:{port}/metrics")
    quiet = await deploy(client, deployer, "1.1.0-errors")  # nobody sends it a request
    assert quiet["status"] == "success", quiet["failure"]
    result = post_deploy(quiet)["result"]
    assert result["error_rate"].startswith("not measured: no requests in the window")
    assert result["verification"]["source"] == "metrics"


@pytest.mark.usefixtures("worker")
async def test_an_unreachable_prometheus_is_reported_not_measured_and_its_userinfo_never_shown(
    client: httpx.AsyncClient, deployer: IssuedToken, admin: IssuedToken, port: int
) -> None:
    closed = free_port()
    response = await client.put(
        "/v1/environments/staging",
        json={"prometheus_url": f"http://metrics:pr0m-s3cret@127.0.0.1:{closed}/"},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    await put_service(client, admin, port, metrics_url=f"http://127.0.0.1:{port}/metrics")
    body = await deploy(client, deployer, "1.0.0")
    assert body["status"] == "success", body["failure"]
    step = post_deploy(body)
    checked = step["result"]["verification"]
    assert checked["source"] == "prometheus"  # the environment's Prometheus comes first
    assert checked["url"] == f"http://[redacted]@127.0.0.1:{closed}/"
    assert all(m["value"] is None for m in checked["measurements"])
    assert "unreachable: ConnectError" in checked["measurements"][0]["detail"]
    # A source was configured but nothing was measured: the step does not say "ok".
    assert step["output"].startswith("thresholds: not measured"), step["output"]
    evidence = await client.get(f"/v1/deployments/{body['id']}/evidence", headers=admin.headers)
    shown = json.dumps(body) + evidence.text
    assert "pr0m-s3cret" not in shown
