"""``formula-ops deploy`` and ``formula-ops apply`` as CI and operators run them: the real
executable against ``formula-ops serve`` (embedded SQLite + Redis, the seeded ``local``
environment run by the process driver), on free ports."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli_runs import Server
from tests.helpers import free_port

pytestmark = pytest.mark.slow
DEPLOYMENT_URL = re.compile(r"URL: (http://\S+/v1/deployments/(\S+))")


def _stop_sample_services(state_dir: Path) -> None:
    """The sample services outlive ``serve`` (as deployed services do): stop them."""
    for state in (state_dir / "processes").glob("*/*.json"):
        try:
            pid = json.loads(state.read_text())["pid"]
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("serve-deploy")
    server = Server(
        workdir,
        FORMULA_OPS_LOCAL_BACKEND_PORT=str(free_port()),
        FORMULA_OPS_LOCAL_FRONTEND_PORT=str(free_port()),
    )
    try:
        server.wait_healthy()
        server.create_token()
        yield server
    finally:
        if server.process.poll() is None:
            code = server.stop()
            assert code == 0, server.output()
        _stop_sample_services(server.state_dir)


def backend_version(server: Server) -> str | None:
    port = server.env["FORMULA_OPS_LOCAL_BACKEND_PORT"]
    try:
        version: str = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).json()["version"]
    except httpx.HTTPError:
        return None
    return version


def test_deploy_roll_back_and_refuse_the_pinned_version(server: Server) -> None:
    ci = {"GITHUB_RUN_ID": "4242"}
    ok = server.cli(
        "deploy", "--env", "local", "--service", "backend", "--version", "1.1.0", "--wait", **ci
    )
    found = DEPLOYMENT_URL.search(ok.stdout)
    assert found, ok.stdout
    assert "success" in ok.stdout
    assert backend_version(server) == "1.1.0"
    first_id = found.group(2)

    retried = server.cli(
        "deploy", "--env", "local", "--service", "backend", "--version", "1.1.0", **ci
    )
    assert "already requested" in retried.stdout
    assert first_id in retried.stdout

    broken = server.cli(
        "deploy",
        "--env",
        "local",
        "--service",
        "backend",
        "--version",
        "1.2.0-broken",
        "--wait",
        code=1,
    )
    assert "rolled_back" in broken.stdout, broken.stdout
    assert backend_version(server) == "1.1.0"
    broken_url = DEPLOYMENT_URL.search(broken.stdout)
    assert broken_url, broken.stdout
    deployment = server.get(f"/v1/deployments/{broken_url.group(2)}")
    assert deployment["status"] == "rolled_back"
    evidence = server.get(f"/v1/deployments/{broken_url.group(2)}/evidence")
    assert evidence["rollback"]["triggered"] is True

    refused = server.cli(
        "deploy", "--env", "local", "--service", "backend", "--version", "1.2.0-broken", code=1
    )
    assert "pinned" in refused.stderr
    assert backend_version(server) == "1.1.0"

    listed = server.get("/v1/deployments", limit=50)["items"]
    assert len(listed) == 2  # the retry and the pinned attempt created nothing


def test_dry_run_and_usage_errors(server: Server) -> None:
    plan = server.cli(
        "deploy", "--env", "local", "--service", "frontend", "--version", "2.0.0", "--dry-run"
    )
    assert "deploy frontend" in plan.stdout
    assert "rollback frontend" in plan.stdout
    server.cli("deploy", "--env", "local", "--service", "frontend", code=2)  # no --version
    server.cli(
        "deploy", "--env", "local", "--service", "x", "--version", "1", code=2, FORMULA_OPS_TOKEN=""
    )


def test_apply_a_declarative_file(server: Server, tmp_path: Path) -> None:
    port = free_port()
    file = tmp_path / "environments.yaml"
    file.write_text(
        f"""
environments:
  - name: staging
    description: pre-production
    required_checklist: [code_review]
    services:
      - name: api
        driver: process
        config:
          command: ["{{python}}", "-m", "app.sample_service"]
          port: {port}
        health_url: http://127.0.0.1:{port}/health
        settle_seconds: 1
"""
    )
    dry = server.cli("apply", "-f", str(file), "--dry-run")
    assert "+ staging" in dry.stdout
    assert "+ staging/api" in dry.stdout
    with pytest.raises(AssertionError):
        server.get("/v1/environments/staging")
    server.cli("apply", "-f", str(file))
    env = server.get("/v1/environments/staging")
    assert env["required_checklist"] == ["code_review"]
    assert [s["name"] for s in env["services"]] == ["api"]
    assert "No differences" in server.cli("apply", "-f", str(file)).stdout

    file.write_text(file.read_text().replace("settle_seconds: 1", "settle_seconds: 5"))
    changed = server.cli("apply", "-f", str(file))
    assert "~ staging/api" in changed.stdout
    assert "settle_seconds: 1.0 -> 5.0" in changed.stdout
    assert server.get("/v1/environments/staging/services/api")["settle_seconds"] == 5

    file.write_text("environments: [{name: Bad Name}]")
    bad = server.cli("apply", "-f", str(file), code=2)
    assert "not a valid environments file" in bad.stderr


def test_a_retry_after_a_dropped_connection_gets_the_same_deployment(server: Server) -> None:
    """The first request's connection drops (the client gives up) while the server waits
    for the deployment; the retry with the same key answers that deployment."""
    headers = {
        "Authorization": f"Bearer {server.token}",
        "Idempotency-Key": "ci-pipeline-7-deploy-frontend",
    }
    body = {"environment": "local", "service": "frontend", "version": "3.0.0"}
    before = len(server.get("/v1/deployments", limit=100)["items"])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/v1/deployments",
            json=body,
            headers={**headers, "Prefer": "wait=60"},
            timeout=httpx.Timeout(10, read=0.3),
        )
    retried = httpx.post(f"{server.url}/v1/deployments", json=body, headers=headers, timeout=30)
    assert retried.status_code in (201, 202), retried.text
    assert retried.headers["idempotent-replayed"] == "true"
    deployments = server.get("/v1/deployments", limit=100)["items"]
    assert len(deployments) == before + 1
    assert deployments[0]["id"] == retried.json()["id"]
    done = server.get(f"/v1/deployments/{retried.json()['id']}", wait=60)
    assert done["status"] == "success"
