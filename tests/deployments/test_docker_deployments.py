"""The deployment scenario against a real dockerd (started by the suite, images built
locally from busybox and pulled from a local registry): deploy, a broken version rolled
back automatically, and its retry refused as pinned."""

from __future__ import annotations

import httpx
import pytest

from app.core.context import AppContext
from tests.docker_env import DockerEnv
from tests.factories import IssuedToken
from tests.helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]
WAIT = {"Prefer": "wait=120"}


def served_version(port: int, path: str = "/version") -> str | None:
    """What the sample serves at ``path`` (its version by default)."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).text.strip()
    except httpx.HTTPError:
        return None


async def test_docker_deploy_rollback_and_pin(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    deployer: IssuedToken,
    docker_env: DockerEnv,
) -> None:
    for version in ("1.1.0", "1.2.0-broken"):
        docker_env.build_and_push(version)
    port = free_port()
    env = f"docker-{context.settings.redis_prefix[-6:]}"
    await client.put(f"/v1/environments/{env}", json={}, headers=admin.headers)
    created = await client.put(
        f"/v1/environments/{env}/services/web",
        json={
            "driver": "docker",
            "config": docker_env.service_config(
                container_name=f"web-{env}", ports={"8080/tcp": port}, env={"MODE": "test"}
            ),
            "health_url": f"http://127.0.0.1:{port}/health",
            "health_timeout_seconds": 20,
            "smoke_tests": [
                {"name": "version", "type": "http", "url": f"http://127.0.0.1:{port}/version"}
            ],
        },
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    try:
        body = {"environment": env, "service": "web"}
        ok = await client.post(
            "/v1/deployments",
            json={**body, "version": "1.1.0"},
            headers={**deployer.headers, **WAIT},
            timeout=150,
        )
        assert ok.json()["status"] == "success", ok.json()["failure"]
        assert served_version(port) == "1.1.0"

        broken = await client.post(
            "/v1/deployments",
            json={**body, "version": "1.2.0-broken"},
            headers={**deployer.headers, **WAIT},
            timeout=150,
        )
        failed = broken.json()
        assert failed["status"] == "rolled_back", failed
        assert failed["failure"]["type"] == "/problems/health-check-failed"
        assert served_version(port) == "1.1.0"
        with docker_env.client() as docker:
            running = docker.containers.list(filters={"label": "formula-ops.service=web"})
            assert [c.labels["formula-ops.version"] for c in running] == ["1.1.0"]
            assert running[0].attrs["Config"]["Env"].count("MODE=test") == 1

        again = await client.post(
            "/v1/deployments", json={**body, "version": "1.2.0-broken"}, headers=deployer.headers
        )
        assert again.status_code == 409
        assert again.json()["type"] == "/problems/version-pinned"
        evidence = await client.get(
            f"/v1/deployments/{failed['id']}/evidence", headers=deployer.headers
        )
        assert evidence.json()["rollback"]["triggered"] is True
    finally:
        docker_env.remove_containers()


async def put_docker_service(
    client: httpx.AsyncClient, admin: IssuedToken, env: str, port: int, **config: object
) -> None:
    await client.put(f"/v1/environments/{env}", json={}, headers=admin.headers)
    created = await client.put(
        f"/v1/environments/{env}/services/web",
        json={
            "driver": "docker",
            "config": config,
            "health_url": f"http://127.0.0.1:{port}/health",
            "health_timeout_seconds": 20,
        },
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text


async def test_a_declared_volume_keeps_its_data_across_a_deploy(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    deployer: IssuedToken,
    docker_env: DockerEnv,
) -> None:
    for version in ("1.0.0", "1.1.0"):
        docker_env.build_and_push(version)
    port = free_port()
    env = f"volume-{context.settings.redis_prefix[-6:]}"
    await put_docker_service(
        client,
        admin,
        env,
        port,
        **docker_env.service_config(
            container_name=f"web-{env}",
            ports={"8080/tcp": port},
            mounts={"/www/data": {"type": "volume", "source": f"data-{env}"}},
        ),
    )
    try:
        body = {"environment": env, "service": "web"}
        first = await client.post(
            "/v1/deployments",
            json={**body, "version": "1.0.0"},
            headers={**deployer.headers, **WAIT},
            timeout=150,
        )
        assert first.json()["status"] == "success", first.json()["failure"]
        with docker_env.client() as docker:
            code, output = docker.containers.get(f"web-{env}").exec_run(
                ["sh", "-c", "echo written-by-1.0.0 > /www/data/note"]
            )
            assert code == 0, output

        second = await client.post(
            "/v1/deployments",
            json={**body, "version": "1.1.0"},
            headers={**deployer.headers, **WAIT},
            timeout=150,
        )
        assert second.json()["status"] == "success", second.json()["failure"]
        assert served_version(port) == "1.1.0"
        assert served_version(port, "/data/note") == "written-by-1.0.0"
    finally:
        docker_env.remove_containers()


async def test_a_foreign_container_of_the_same_name_fails_the_deploy_untouched(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    deployer: IssuedToken,
    docker_env: DockerEnv,
) -> None:
    ref = docker_env.build_and_push("1.0.0")
    port = free_port()
    env = f"foreign-{context.settings.redis_prefix[-6:]}"
    name = f"someone-{env}"
    with docker_env.client() as docker:
        docker.images.pull(docker_env.repository(), tag="1.0.0")
        foreign = docker.containers.run(ref, name=name, detach=True, labels={"team": "other"})
    await put_docker_service(
        client,
        admin,
        env,
        port,
        **docker_env.service_config(container_name=name, ports={"8080/tcp": port}),
    )
    try:
        response = await client.post(
            "/v1/deployments",
            json={"environment": env, "service": "web", "version": "1.0.0"},
            headers={**deployer.headers, **WAIT},
            timeout=150,
        )
        failed = response.json()
        assert failed["status"] in ("failed", "rolled_back"), failed
        assert failed["failure"]["type"] == "/problems/deploy-failed", failed["failure"]
        assert "not created by formula-ops" in failed["failure"]["detail"]
        assert "left untouched" in failed["failure"]["detail"]
        with docker_env.client() as docker:
            after = docker.containers.get(foreign.id)
            assert after.name == name
            assert after.attrs["State"]["Running"]
            assert after.labels == {"team": "other"}
            assert docker.containers.list(all=True, filters={"label": "formula-ops.service"}) == []
    finally:
        docker_env.remove_containers()
