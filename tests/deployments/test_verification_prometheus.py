"""Post-deployment verification through a real Prometheus (Debian's ``prometheus``
package: ``apt-get install -y --no-install-recommends prometheus``) listening on
127.0.0.1 and scraping the sample service every second: the environment's
``prometheus_url`` is queried (``/api/v1/query``) with the thresholds' own PromQL."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.core.context import AppContext
from tests.deployments.test_verification import (
    deploy,
    post_deploy,
    put_service,
    running_version_of,
    traffic,
)
from tests.factories import IssuedToken
from tests.helpers import free_port, stop_services

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="needs the prometheus binary (apt package)"),
]


@pytest.fixture(scope="module")
def service_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, service_port: int) -> Iterator[str]:
    """A real Prometheus scraping 127.0.0.1:<service_port> every second; its URL."""
    assert PROMETHEUS is not None
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: sample\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{service_port}']\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        started = time.monotonic()
        _wait_ready(url, process, root / "prometheus.log")
        print(f"prometheus ready after {time.monotonic() - started:.2f} s at {url}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if process.poll() is not None:
            pytest.fail(f"prometheus exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail("prometheus did not become ready in 30 s")


@pytest.fixture
async def staging(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    prometheus: str,
    service_port: int,
) -> AsyncIterator[int]:
    response = await client.put(
        "/v1/environments/staging",
        json={"description": "tests", "prometheus_url": prometheus},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    # No metrics_url: the numbers can only come from Prometheus.
    await put_service(client, admin, service_port, settle_seconds=3)
    yield service_port
    await stop_services(context)


async def _scraped(prometheus: str, service: str) -> None:
    """Until Prometheus holds a sample of the service's request counter, labelled with
    its environment by the service itself (the ``process`` driver passes it as
    ``SERVICE_ENVIRONMENT``): the seeded queries select both."""
    query = f'http_requests_total{{service="{service}",environment="staging"}}'
    async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
        for _ in range(100):
            body = (await http.get(f"{prometheus}/api/v1/query", params={"query": query})).json()
            if body["data"]["result"]:
                return
            await asyncio.sleep(0.1)
    pytest.fail("prometheus never scraped the service")


@pytest.mark.usefixtures("worker")
async def test_prometheus_measures_the_error_rate_and_a_breach_rolls_back(
    client: httpx.AsyncClient,
    deployer: IssuedToken,
    prometheus: str,
    staging: int,
) -> None:
    async with traffic(staging) as seen:
        first = await deploy(client, deployer, "1.0.0")
        assert first["status"] == "success", first["failure"]
        await _scraped(prometheus, "backend")
        # Scraped before and after: a healthy version is measured at 0 % (no 5xx series
        # at all counts as 0, not as "no data").
        healthy = await deploy(client, deployer, "1.0.1")
        assert healthy["status"] == "success", healthy["failure"]
        result = post_deploy(healthy)["result"]
        checked = result["verification"]
        assert checked["source"] == "prometheus"
        assert checked["url"] == prometheus
        assert checked["window_seconds"] == 3.0
        assert result["error_rate"] == 0.0, checked
        assert isinstance(result["latency_p95"], float), checked
        grades = {m["threshold"]: m["grade"] for m in checked["measurements"]}
        assert grades == {"error_rate": "ok", "latency_p95": "ok"}

        broken = await deploy(client, deployer, "1.1.0-errors")
    assert 500 in seen
    assert broken["status"] == "rolled_back", broken["failure"]
    assert broken["failure"]["type"] == "/problems/threshold-breached"
    breached = post_deploy(broken)["result"]["breached"]
    assert breached["threshold"] == "error_rate"
    assert breached["source"] == "prometheus"
    assert breached["critical"] == 5.0
    assert 10.0 <= breached["value"] <= 30.0, breached  # one in five: 20 %
    assert f"{breached['value']:g}%" in broken["failure"]["detail"]
    (rate,) = [
        m
        for m in post_deploy(broken)["result"]["verification"]["measurements"]
        if m["threshold"] == "error_rate"
    ]
    assert rate["detail"] == "Prometheus instant query over 3s"
    assert await running_version_of(staging) == "1.0.1"
