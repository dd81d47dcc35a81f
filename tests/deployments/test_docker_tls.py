"""A "remote" Docker host: the suite's dockerd on ``tcp://127.0.0.1`` with mutual TLS,
named by an environment's ``docker_hosts`` and by its service's ``config.docker_host``.
A deployment through the API goes there as to the local socket; the ``docker`` step
action lists, reads logs of, inspects, measures, checks, restarts (an unhealthy
container, then verifies its health) and prunes there; an engine that refuses the client
fails the action clearly and quickly."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.context import AppContext
from app.runbooks.actions.docker import DockerParams, docker_step
from app.runs.actions import ACTIONS, StepContext, StepOutcome
from app.runs.models import Step, StepStatus
from tests.docker_env import DockerEnv
from tests.factories import IssuedToken
from tests.helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.one_backend("postgres")]
WAIT = {"Prefer": "wait=120"}
SECRET = "s3cret-api-token-value"
# The sample's files are copied at each start, so a restart repairs a removed health file
# (a container broken at run time, as a restart is meant for); it says hello on stdout.
COMMAND = [
    "/bin/sh",
    "-c",
    'rm -rf /live && cp -r /www /live && echo "starting with API_TOKEN=$API_TOKEN" '
    '&& echo "hello from $(cat /live/version)"; '
    "httpd -f -p 0.0.0.0:${PORT} -h /live & trap 'kill $! 2>/dev/null; exit 0' TERM INT; wait",
]


async def act(context: AppContext, **params: Any) -> StepOutcome:
    lines: list[str] = []

    async def log(line: str) -> None:
        lines.append(line)

    model = DockerParams.model_validate(params)
    outcome = await asyncio.wait_for(docker_step(model, StepContext(context, log)), 90)
    for line in lines:
        assert SECRET not in line
    assert SECRET not in outcome.output
    assert SECRET not in json.dumps(outcome.data)
    assert outcome.data["summary"]
    return outcome


async def wait_for_health(docker_env: DockerEnv, name: str, status: str) -> None:
    deadline = time.monotonic() + 30
    with docker_env.client() as docker:
        while True:
            container = docker.containers.get(name)
            if container.attrs["State"].get("Health", {}).get("Status") == status:
                return
            assert time.monotonic() < deadline, f"{name} never became {status}"
            await asyncio.sleep(0.3)


async def test_deploy_and_operate_through_a_tls_docker_host(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    deployer: IssuedToken,
    docker_env: DockerEnv,
    worker: None,
) -> None:
    docker_env.build_and_push("1.1.0")
    material = docker_env.tls_material()
    port = free_port()
    env = f"tls-{context.settings.redis_prefix[-6:]}"
    name = f"web-{env}"
    created = await client.put(
        f"/v1/environments/{env}",
        json={"docker_hosts": [{"name": "remote", "url": docker_env.tls_url, "tls": material}]},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    service = await client.put(
        f"/v1/environments/{env}/services/web",
        json={
            "driver": "docker",
            "config": {
                "image": docker_env.repository(),
                "docker_host": "remote",
                "container_name": name,
                "ports": {"8080/tcp": port},
                "env": {"API_TOKEN": SECRET},
                "command": COMMAND,
                "stop_timeout_seconds": 2,
            },
            "health_url": f"http://127.0.0.1:{port}/health",
            "health_timeout_seconds": 20,
        },
        headers=admin.headers,
    )
    assert service.status_code == 201, service.text
    try:
        # (a) a deployment through the API reaches the engine over TLS.
        deployed = await client.post(
            "/v1/deployments",
            json={"environment": env, "service": "web", "version": "1.1.0"},
            headers={**deployer.headers, **WAIT},
            timeout=150,
        )
        assert deployed.json()["status"] == "success", deployed.json()
        async with httpx.AsyncClient(trust_env=False) as http:
            health = await http.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert health.json()["version"] == "1.1.0"
        with docker_env.client() as docker:
            labelled = docker.containers.list(filters={"label": f"formula-ops.environment={env}"})
            assert [c.name for c in labelled] == [name]
        async with context.sessionmaker() as session:
            params = list(await session.scalars(select(Step.params)))
        stored = json.dumps(params)
        assert '"docker_host": "remote"' in stored  # resolved when the step runs
        assert material["client_key"].split("-----")[2].strip()[:40] not in stored

        # (b) the docker action against the TLS host.
        assert context.registry[ACTIONS].get("docker").params is DockerParams
        ps = await act(context, environment=env, operation="ps")
        assert ps.status == StepStatus.SUCCESS, ps.output
        [listed] = ps.data["services"]
        assert listed["engine"] == docker_env.tls_url
        [container] = listed["containers"]
        assert container["name"] == name
        assert container["running"] is True
        assert container["version"] == "1.1.0"

        logs = await act(context, environment=env, service="web", operation="logs", grep="hello")
        assert logs.status == StepStatus.SUCCESS, logs.output
        [lines] = [s["lines"] for s in logs.data["services"]]
        assert len(lines) == 1
        assert lines[0].endswith("hello from 1.1.0")
        tokens = await act(
            context,
            environment=env,
            operation="logs",
            grep="API_TOKEN=.*",
            grep_regex=True,
            since_minutes=60,
        )
        [token_lines] = [s["lines"] for s in tokens.data["services"]]
        assert len(token_lines) == 1
        assert "API_TOKEN=[redacted]" in token_lines[0]
        nothing = await act(context, environment=env, operation="logs", grep="no such line")
        assert nothing.data["services"][0]["lines"] == []

        inspected = await act(context, environment=env, operation="inspect")
        view = inspected.data["services"][0]["inspect"]
        assert "API_TOKEN=[redacted]" in view["config"]["env"]
        assert view["config"]["labels"]["formula-ops.version"] == "1.1.0"

        stats = await act(context, environment=env, operation="stats")
        assert stats.data["services"][0]["stats"]["memory_bytes"] > 0

        healthy = await act(context, environment=env, operation="health")
        assert healthy.status == StepStatus.SUCCESS, healthy.output
        assert healthy.data["services"][0]["healthy"] is True

        # An unhealthy container: its health file removed at run time.
        with docker_env.client() as docker:
            assert docker.containers.get(name).exec_run(["rm", "/live/health"]).exit_code == 0
        await wait_for_health(docker_env, name, "unhealthy")
        sick = await act(context, environment=env, service="web", operation="health")
        assert sick.status == StepStatus.FAILURE
        assert sick.data["services"][0]["healthy"] is False

        restarted = await act(
            context, environment=env, service="web", operation="restart", wait_healthy_seconds=30
        )
        assert restarted.status == StepStatus.SUCCESS, restarted.output
        [after] = restarted.data["services"]
        assert after["restarted"] is True
        assert after["healthy"] is True
        assert after["containers"][0]["health"] == "healthy"
        assert after["containers"][0]["restart_count"] == 0  # restarted, not crashed
        again = await act(context, environment=env, operation="health")
        assert again.status == StepStatus.SUCCESS, again.output

        pruned = await act(context, environment=env, operation="prune")
        assert pruned.status == StepStatus.SUCCESS, pruned.output
        [engine] = pruned.data["engines"]
        assert engine["engine"] == docker_env.tls_url
        assert engine["all_unused"] is False
        with docker_env.client() as docker:
            assert docker.containers.get(name).status == "running"  # in use: kept
    finally:
        docker_env.remove_containers()


async def test_an_engine_that_refuses_the_client_fails_the_action_clearly(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, docker_env: DockerEnv
) -> None:
    env = f"refused-{context.settings.redis_prefix[-6:]}"
    created = await client.put(
        f"/v1/environments/{env}",
        json={
            "docker_hosts": [
                # Loopback TCP may go without TLS (a forwarded port); this one demands it.
                {"name": "plain", "url": docker_env.tls_url},
                {"name": "rogue", "url": docker_env.tls_url, "tls": docker_env.rogue_material()},
            ]
        },
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    for service in ("plain", "rogue"):
        response = await client.put(
            f"/v1/environments/{env}/services/{service}",
            json={
                "driver": "docker",
                "config": {"image": docker_env.repository(), "docker_host": service},
            },
            headers=admin.headers,
        )
        assert response.status_code == 201, response.text
    for service in ("plain", "rogue"):
        started = time.monotonic()
        outcome = await act(context, environment=env, service=service, operation="ps")
        assert time.monotonic() - started < 30
        assert outcome.status == StepStatus.FAILURE
        [result] = outcome.data["services"]
        assert result["error"].startswith("cannot reach the Docker engine"), result
        assert outcome.error

    unknown = await act(context, environment="no-such-env", operation="ps")
    assert unknown.status == StepStatus.FAILURE
    assert unknown.data["problem"] == "docker-target-unknown"
    with pytest.raises(ValueError, match="repeated group"):
        DockerParams.model_validate(
            {"environment": env, "operation": "logs", "grep": "(a+)+$", "grep_regex": True}
        )
    with pytest.raises(ValueError, match="until_minutes"):
        DockerParams.model_validate(
            {"environment": env, "operation": "logs", "since_minutes": 5, "until_minutes": 10}
        )
