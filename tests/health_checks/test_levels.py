"""The daily health check grades response time, disk and memory by the thresholds table
(``/v1/thresholds``): the plan carries the current levels as the probes' parameters, and
a probe given parameters of its own keeps them."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from app.auth.roles import Role
from app.core.context import AppContext
from app.health_checks import probes
from app.runs.actions import StepContext
from app.runs.models import Level
from tests.factories import IssuedToken, app_with, issue_token


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health"
    server.shutdown()


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


def settings_for(url: str) -> dict[str, Any]:
    return {
        "health_check": {
            "services": [{"name": "site", "url": url}],
            "disk_paths": ["/"],
            "log_files": [],
        }
    }


async def set_threshold(
    client: httpx.AsyncClient, admin: IssuedToken, name: str, **levels: float | None
) -> None:
    response = await client.patch(f"/v1/thresholds/{name}", json=levels, headers=admin.headers)
    assert response.status_code == 200, response.text


def params_by_step(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s["params"] for s in plan["steps"]}


async def test_the_plan_carries_the_tables_levels(
    context: AppContext, admin: IssuedToken, operator: IssuedToken
) -> None:
    app = app_with(context, **settings_for("http://127.0.0.1:9/health"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        dry = {"dry_run": True}
        before = await http.post("/v1/health-checks", json=dry, headers=operator.headers)
        assert before.status_code == 200, before.text
        params = params_by_step(before.json())
        assert (params["service site"]["warning_ms"], params["service site"]["critical_ms"]) == (
            1000,
            2000,
        )
        assert (params["disk /"]["warning_percent"], params["disk /"]["critical_percent"]) == (
            80,
            95,
        )
        assert (params["memory"]["warning_percent"], params["memory"]["critical_percent"]) == (
            85,
            None,
        )

        await set_threshold(http, admin, "latency_p95", warning=250, critical=None)
        await set_threshold(http, admin, "disk", warning=60, critical=70)
        await set_threshold(http, admin, "memory", critical=97)
        after = await http.post("/v1/health-checks", json=dry, headers=operator.headers)
    params = params_by_step(after.json())
    assert (params["service site"]["warning_ms"], params["service site"]["critical_ms"]) == (
        250,
        None,
    )
    assert (params["disk /"]["warning_percent"], params["disk /"]["critical_percent"]) == (60, 70)
    assert (params["memory"]["warning_percent"], params["memory"]["critical_percent"]) == (85, 97)


async def test_a_run_grades_by_the_table(
    context: AppContext,
    admin: IssuedToken,
    operator: IssuedToken,
    target: str,
    worker: None,
) -> None:
    """Levels below anything this machine measures: the same real probes now report a
    warning (response time, memory) and a critical disk, and the run fails."""
    app = app_with(context, **settings_for(target))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        await set_threshold(http, admin, "latency_p95", warning=0, critical=None)
        await set_threshold(http, admin, "memory", warning=0, critical=None)
        await set_threshold(http, admin, "disk", warning=0, critical=0.0001)
        response = await http.post(
            "/v1/health-checks", headers={**operator.headers, "Prefer": "wait=60"}
        )
    assert response.status_code == 201, response.text
    body = response.json()
    steps = {s["name"]: s for s in body["steps"]}
    assert steps["service site"]["level"] == "warning", steps["service site"]
    assert steps["memory"]["level"] == "warning", steps["memory"]
    assert steps["disk /"]["level"] == "critical", steps["disk /"]
    assert body["status"] == "failure"
    assert body["result"]["critical"] == ["disk /"]
    # ... and no backup of the control plane yet (a warning until the first one).
    assert set(body["result"]["warning"]) == {"service site", "memory", "newest backup"}


async def test_a_probe_keeps_parameters_of_its_own(context: AppContext) -> None:
    """A ``disk`` or ``memory`` step given levels (a runbook step, say) is graded by them,
    not by the table."""

    async def log(line: str) -> None:
        pass

    ctx = StepContext(context=context, log=log)
    usage = shutil.disk_usage("/")
    used = usage.used / usage.total * 100
    assert used > 0.001
    disk = probes.disk
    critical = await disk(probes.DiskParams(path="/", critical_percent=0.001), ctx)
    assert critical.level == Level.CRITICAL
    none = await disk(probes.DiskParams(path="/", warning_percent=None, critical_percent=None), ctx)
    assert none.level == Level.OK
    memory = await probes.memory(probes.MemoryParams(warning_percent=None, critical_percent=0), ctx)
    assert memory.level == Level.CRITICAL
