"""Acceptance: the ``service-down`` playbook against a real dockerd, started through the
API. A container broken at run time (its health file removed: Docker reports it
unhealthy) is diagnosed (status, logs), restarted and verified healthy — on the local
engine and on a "remote" Docker host reached over TCP with mutual TLS, the same way. In
production the restart waits for an operator's approval.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from app.auth.roles import Role
from app.core.context import AppContext
from tests.deployments.test_docker_tls import COMMAND, wait_for_health
from tests.docker_env import DockerEnv
from tests.factories import IssuedToken, issue_token
from tests.helpers import free_port
from tests.runbook_actions.test_approvals import awaiting, finished

# The subject is the Docker engine; the control plane runs on one backend.
pytestmark = [pytest.mark.slow, pytest.mark.one_backend("postgres")]
WAIT = {"Prefer": "wait=180"}


async def deploy_web(
    client: httpx.AsyncClient,
    admin: IssuedToken,
    docker_env: DockerEnv,
    env: str,
    *,
    tls: bool,
) -> tuple[str, int]:
    """Environment ``env`` with a docker service ``web`` (version 1.2.0), deployed; its
    container's name and port."""
    port = free_port()
    name = f"web-{env}-{port}"
    environment: dict[str, Any] = {}
    config: dict[str, Any] = {
        "image": docker_env.repository(),
        "container_name": name,
        "ports": {"8080/tcp": port},
        "command": COMMAND,
        "stop_timeout_seconds": 2,
    }
    if tls:
        environment["docker_hosts"] = [
            {"name": "remote", "url": docker_env.tls_url, "tls": docker_env.tls_material()}
        ]
        config["docker_host"] = "remote"
    else:
        config["docker_host"] = docker_env.docker_host
    created = await client.put(f"/v1/environments/{env}", json=environment, headers=admin.headers)
    assert created.status_code == 201, created.text
    service = await client.put(
        f"/v1/environments/{env}/services/web",
        json={
            "driver": "docker",
            "config": config,
            "health_url": f"http://127.0.0.1:{port}/health",
            "health_timeout_seconds": 20,
        },
        headers=admin.headers,
    )
    assert service.status_code == 201, service.text
    deployed = await client.post(
        "/v1/deployments",
        json={"environment": env, "service": "web", "version": "1.2.0", "backup": False},
        headers={**admin.headers, **WAIT},
        timeout=200,
    )
    assert deployed.json()["status"] == "success", deployed.json()
    return name, port


def break_health(docker_env: DockerEnv, name: str) -> None:
    with docker_env.client() as docker:
        assert docker.containers.get(name).exec_run(["rm", "/live/health"]).exit_code == 0


def check_diagnosed_and_restarted(run: dict[str, Any]) -> None:
    assert run["status"] == "success", run
    steps = {s["name"]: s for s in run["steps"]}
    [status] = steps["container status"]["result"]["services"]
    assert status["containers"][0]["health"] == "unhealthy"
    [logs] = steps["last 50 log lines"]["result"]["services"]
    assert any("hello from 1.2.0" in line for line in logs["lines"])
    [restarted] = steps["restart"]["result"]["services"]
    assert restarted["restarted"] is True
    assert restarted["healthy"] is True
    assert steps["verify health"]["status"] == "success"
    assert "restart:" in run["result"]["summary"]


async def healthy_over_http(port: int) -> bool:
    async with httpx.AsyncClient(trust_env=False) as http:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health", timeout=3)).is_success:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    return False


@pytest.mark.parametrize("tls", [False, True], ids=["local-socket", "tls-remote"])
async def test_service_down_restarts_an_unhealthy_container(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    docker_env: DockerEnv,
    worker: None,
    tls: bool,
) -> None:
    docker_env.build_and_push("1.2.0")
    env = "tls-site" if tls else "local-site"
    try:
        name, port = await deploy_web(client, admin, docker_env, env, tls=tls)
        break_health(docker_env, name)
        await wait_for_health(docker_env, name, "unhealthy")
        operator = await issue_token(context, Role.OPERATOR)
        response = await client.post(
            "/v1/runbooks/service-down/runs",
            json={"parameters": {"environment": env, "service": "web"}},
            headers={**operator.headers, **WAIT},
            timeout=200,
        )
        assert response.status_code == 201, response.text
        run = response.json()
        check_diagnosed_and_restarted(run)
        engine = run["steps"][0]["result"]["services"][0]["engine"]
        assert engine == (docker_env.tls_url if tls else docker_env.docker_host)
        assert await healthy_over_http(port)
    finally:
        docker_env.remove_containers()


async def test_in_production_the_restart_waits_for_an_approval(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    docker_env: DockerEnv,
    worker: None,
) -> None:
    docker_env.build_and_push("1.2.0")
    try:
        name, _ = await deploy_web(client, admin, docker_env, "production", tls=False)
        break_health(docker_env, name)
        await wait_for_health(docker_env, name, "unhealthy")
        operator = await issue_token(context, Role.OPERATOR)
        started = await client.post(
            "/v1/runbooks/service-down/runs",
            json={"parameters": {"environment": "production", "service": "web"}},
            headers=operator.headers,
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        waiting = await awaiting(client, run_id, operator, limit=90)
        assert waiting["awaiting_approval"]["name"] == "approve the restart"
        with docker_env.client() as docker:  # not restarted before the answer
            assert docker.containers.get(name).attrs["State"]["Health"]["Status"] == "unhealthy"
        approver = await issue_token(context, Role.OPERATOR)
        answer = await client.post(
            f"/v1/runs/{run_id}/approve", json={"reason": "on call"}, headers=approver.headers
        )
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 120
        done = await finished(client, run_id, operator)
        while done["status"] in ("queued", "in_progress") and time.monotonic() < deadline:
            done = await finished(client, run_id, operator)
        check_diagnosed_and_restarted(done)
    finally:
        docker_env.remove_containers()
