"""The docker driver against a real dockerd and registry (:mod:`tests.docker_env`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker.errors import NotFound

from app.drivers.base import DriverContext, DriverError, ServiceSpec, UnhealthyError
from app.drivers.docker import (
    LABEL_ENVIRONMENT,
    LABEL_SERVICE,
    LABEL_VERSION,
    DockerDriver,
)
from app.drivers.health import probe
from tests.docker_env import DockerEnv, free_port

ENVIRONMENT = "staging"


class Lines:
    """A driver ``log`` that keeps the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)

    def __str__(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def driver(tmp_path: Path) -> DockerDriver:
    return DockerDriver(DriverContext(state_dir=tmp_path))


def make_spec(
    driver: DockerDriver,
    engine: DockerEnv,
    service: str,
    *,
    port: int | None = None,
    health_timeout: float = 20.0,
    **config: Any,
) -> ServiceSpec:
    raw = engine.service_config(**config)
    if port is not None:
        raw.setdefault("ports", {"8080/tcp": port})
    return ServiceSpec(
        environment=ENVIRONMENT,
        name=service,
        driver="docker",
        config=driver.validate_config(raw),
        health_url=f"http://127.0.0.1:{port}/health" if port is not None else None,
        health_timeout_seconds=health_timeout,
    )


def service_containers(env: DockerEnv, service: str) -> list[Any]:
    filters = {"label": [f"{LABEL_ENVIRONMENT}={ENVIRONMENT}", f"{LABEL_SERVICE}={service}"]}
    with env.client() as client:
        return list(client.containers.list(all=True, filters=filters))


def env_of(container: Any) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in container.attrs["Config"]["Env"])


def wait_docker_healthy(container: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
            return
        assert time.monotonic() < deadline, container.attrs["State"]
        time.sleep(0.2)


@pytest.fixture
def clean_engine(docker_env: DockerEnv) -> Iterator[DockerEnv]:
    yield docker_env
    docker_env.remove_containers(networks=True)


# -- configuration (no engine needed) ---------------------------------------------------


class TestValidateConfig:
    def test_normalises_and_fills_defaults(self, driver: DockerDriver) -> None:
        config = driver.validate_config(
            {"image": "127.0.0.1:5000/sample", "ports": {"8080": 18080}, "env": {"A": "1"}}
        )
        assert config == {
            "image": "127.0.0.1:5000/sample",
            "container_name": None,
            "env": {"A": "1"},
            "ports": {"8080/tcp": 18080},
            "network": None,
            "restart_policy": "unless-stopped",
            "labels": {},
            "command": None,
            "docker_host": None,
            "stop_timeout_seconds": 10,
        }

    @pytest.mark.parametrize(
        ("config", "message"),
        [
            ({"image": "127.0.0.1:5000/sample:1.0.0"}, "contains a tag"),
            ({"image": "registry.example/app@sha256:" + "a" * 64}, "contains a digest"),
            ({"image": "Sample"}, "invalid repository name"),
            ({"image": "sample", "unknown": 1}, "unknown: Extra inputs are not permitted"),
            ({"image": "sample", "restart_policy": "sometimes"}, "restart_policy"),
            ({"image": "sample", "ports": {"http": 80}}, "not a container port"),
            ({"image": "sample", "labels": {"formula-ops.version": "x"}}, "reserved"),
            ({"image": "sample", "container_name": "-bad"}, "not a valid container name"),
            ({}, "image: Field required"),
        ],
    )
    def test_rejects_with_a_readable_message(
        self, driver: DockerDriver, config: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match="invalid docker config") as error:
            driver.validate_config(config)
        assert message in str(error.value)

    async def test_unreachable_engine_is_a_driver_error(self, driver: DockerDriver) -> None:
        spec = ServiceSpec(
            ENVIRONMENT,
            "web",
            "docker",
            {"image": "sample", "docker_host": "unix:///nonexistent/formula-ops/docker.sock"},
        )
        with pytest.raises(DriverError, match="cannot reach the Docker engine"):
            await driver.current(spec)

    async def test_invalid_version_is_refused(self, driver: DockerDriver) -> None:
        spec = ServiceSpec(ENVIRONMENT, "web", "docker", {"image": "sample"})
        with pytest.raises(DriverError, match="not a valid image tag"):
            await driver.deploy(spec, "1.0 beta", Lines())


# -- a real engine -----------------------------------------------------------------------


@pytest.mark.slow
class TestDockerDriver:
    async def test_replace_keep_settings_idempotent_rollback_and_stop(
        self, driver: DockerDriver, clean_engine: DockerEnv
    ) -> None:
        env = clean_engine
        for version in ("1.0.0", "1.1.0", "1.2.0-broken"):
            env.build_and_push(version)
        port = free_port()
        spec = make_spec(
            driver,
            env,
            "web",
            port=port,
            env={"GREETING": "hello"},
            labels={"team": "ops"},
            restart_policy="on-failure",
        )
        log = Lines()
        assert await driver.current(spec) is None

        assert "pulled" in await driver.pull(spec, "1.0.0", log)
        first = await driver.deploy(spec, "1.0.0", log)
        assert (first.version, first.previous_version, first.changed) == ("1.0.0", None, True)
        health = await driver.health(spec)
        assert health.healthy, health
        assert health.version == "1.0.0"
        current = await driver.current(spec)
        assert current is not None
        assert (current.version, current.ident) == ("1.0.0", first.details["container_id"])
        assert current.details["container_name"] == f"formula-ops-{ENVIRONMENT}-web"

        second = await driver.deploy(spec, "1.1.0", log)
        assert (second.version, second.previous_version, second.changed) == (
            "1.1.0",
            "1.0.0",
            True,
        )
        with env.client() as client:
            new = client.containers.get(second.details["container_id"])
            assert new.name == f"formula-ops-{ENVIRONMENT}-web"
            assert env_of(new)["GREETING"] == "hello"
            assert env_of(new)["PORT"] == "8080"  # the image's own
            labels = new.attrs["Config"]["Labels"]
            assert labels["team"] == "ops"
            assert labels[LABEL_VERSION] == "1.1.0"
            assert labels[LABEL_ENVIRONMENT] == ENVIRONMENT
            assert labels[LABEL_SERVICE] == "web"
            bindings = new.attrs["HostConfig"]["PortBindings"]["8080/tcp"]
            assert [b["HostPort"] for b in bindings] == [str(port)]
            assert new.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
            with pytest.raises(NotFound):
                client.containers.get(first.details["container_id"])
        assert env.has_image(f"{env.repository()}:1.0.0"), "the old image is kept"
        assert [c.id for c in service_containers(env, "web")] == [new.id]
        served = await probe(spec.health_url or "")
        assert (served.healthy, served.version) == (True, "1.1.0")

        again = await driver.deploy(spec, "1.1.0", log)
        assert (again.changed, again.previous_version) == (False, "1.1.0")
        assert again.details["container_id"] == new.id

        with pytest.raises(UnhealthyError) as failure:
            await driver.deploy(spec, "1.2.0-broken", log)
        assert "1.2.0-broken" in str(failure.value)
        assert "did not become healthy" in str(failure.value)
        current = await driver.current(spec)
        assert current is not None
        assert (current.version, current.ident) == ("1.1.0", new.id)
        served = await probe(spec.health_url or "")
        assert (served.healthy, served.version) == (True, "1.1.0")
        assert [c.name for c in service_containers(env, "web")] == [new.name]
        assert (await driver.health(spec)).healthy
        assert any("rolled back" in line for line in log.lines), log

        await driver.stop(spec, log)
        assert await driver.current(spec) is None
        assert service_containers(env, "web") == []
        await driver.stop(spec, log)  # nothing left: no error
        health = await driver.health(spec)
        assert not health.healthy
        assert "no running container" in health.detail

    async def test_carries_over_settings_of_a_container_started_by_hand(
        self, driver: DockerDriver, clean_engine: DockerEnv
    ) -> None:
        env = clean_engine
        old_ref = env.build_and_push("1.0.0")
        env.build_and_push("1.1.0")
        port = free_port()
        name = f"formula-ops-{ENVIRONMENT}-api"
        with env.client() as client:
            network = client.networks.create(f"formula-ops-test-{port}", driver="bridge")
            client.images.pull(env.repository(), tag="1.0.0")
            client.containers.run(
                old_ref,
                name=name,
                detach=True,
                environment={"EXTRA": "kept", "PORT": "8081"},
                labels={
                    LABEL_ENVIRONMENT: ENVIRONMENT,
                    LABEL_SERVICE: "api",
                    LABEL_VERSION: "1.0.0",
                    "owner": "by-hand",
                },
                ports={"8081/tcp": port},
                network=network.name,
                restart_policy={"Name": "always"},
            )
        spec = make_spec(driver, env, "api", env={"FROM_CONFIG": "yes"})
        spec = ServiceSpec(
            spec.environment,
            spec.name,
            spec.driver,
            spec.config,
            health_url=f"http://127.0.0.1:{port}/health",
            health_timeout_seconds=20,
        )
        result = await driver.deploy(spec, "1.1.0", Lines())
        assert (result.previous_version, result.changed) == ("1.0.0", True)
        with env.client() as client:
            new = client.containers.get(name)
            assert new.id == result.details["container_id"]
            variables = env_of(new)
            assert (variables["EXTRA"], variables["PORT"]) == ("kept", "8081")
            assert variables["FROM_CONFIG"] == "yes"
            assert new.attrs["Config"]["Labels"]["owner"] == "by-hand"
            assert list(new.attrs["NetworkSettings"]["Networks"]) == [network.name]
            bindings = new.attrs["HostConfig"]["PortBindings"]["8081/tcp"]
            assert [b["HostPort"] for b in bindings] == [str(port)]
            # The config states the restart policy (its default when not given).
            assert new.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        served = await probe(spec.health_url or "")
        assert (served.healthy, served.version) == (True, "1.1.0")
        await driver.stop(spec, Lines())

    async def test_without_published_ports_old_runs_until_new_is_healthy(
        self, driver: DockerDriver, clean_engine: DockerEnv
    ) -> None:
        env = clean_engine
        env.build_and_push("1.0.0")
        env.build_and_push("1.1.0")
        spec = make_spec(driver, env, "queue")  # no ports, no health URL: Docker's status
        log = Lines()
        await driver.deploy(spec, "1.0.0", log)
        result = await driver.deploy(spec, "1.1.0", log)
        assert (result.previous_version, result.changed) == ("1.0.0", True)
        assert not any("to free its ports" in line for line in log.lines), log
        health = await driver.health(spec)
        assert (health.healthy, health.version) == (True, "1.1.0")
        assert "Docker health: healthy" in health.detail
        assert len(service_containers(env, "queue")) == 1

    async def test_first_deploy_of_a_broken_version_leaves_nothing(
        self, driver: DockerDriver, clean_engine: DockerEnv
    ) -> None:
        env = clean_engine
        env.build_and_push("1.2.0-broken")
        spec = make_spec(driver, env, "broken", port=free_port())
        started = time.monotonic()
        with pytest.raises(UnhealthyError, match=r"unhealthy|404"):
            await driver.deploy(spec, "1.2.0-broken", Lines())
        assert time.monotonic() - started < 15, "fails on Docker's unhealthy, not the timeout"
        assert await driver.current(spec) is None
        assert service_containers(env, "broken") == []

    async def test_missing_version_fails_the_pull_and_keeps_what_runs(
        self, driver: DockerDriver, clean_engine: DockerEnv
    ) -> None:
        env = clean_engine
        env.build_and_push("1.0.0")
        spec = make_spec(driver, env, "pull", port=free_port())
        await driver.deploy(spec, "1.0.0", Lines())
        with pytest.raises(DriverError, match=r"pull of .*sample:9\.9\.9 failed"):
            await driver.pull(spec, "9.9.9", Lines())
        with pytest.raises(DriverError, match="pull of"):
            await driver.deploy(spec, "9.9.9", Lines())
        current = await driver.current(spec)
        assert current is not None
        assert current.version == "1.0.0"
        assert (await driver.health(spec)).healthy

    async def test_recovers_from_interrupted_deploys(
        self, driver: DockerDriver, clean_engine: DockerEnv
    ) -> None:
        env = clean_engine
        refs = {v: env.build_and_push(v) for v in ("1.0.0", "1.1.0", "1.2.0-broken")}
        port = free_port()
        spec = make_spec(driver, env, "jobs", port=port)
        name = f"formula-ops-{ENVIRONMENT}-jobs"
        first = await driver.deploy(spec, "1.0.0", Lines())
        original = first.details["container_id"]

        def interrupt(version: str, *, start_new: bool) -> Any:
            """What a worker killed mid-deploy leaves: the old one renamed aside and
            stopped, maybe the new one started under the name."""
            with env.client() as client:
                old = client.containers.get(name)
                old.rename(name + "-previous")
                old.stop(timeout=1)
                if not start_new:
                    return None
                client.images.pull(env.repository(), tag=version)
                return client.containers.run(
                    refs[version],
                    name=name,
                    detach=True,
                    labels={
                        LABEL_ENVIRONMENT: ENVIRONMENT,
                        LABEL_SERVICE: "jobs",
                        LABEL_VERSION: version,
                    },
                    ports={"8080/tcp": port},
                )

        # Killed before the new container was created: the old one comes back.
        interrupt("1.1.0", start_new=False)
        log = Lines()
        result = await driver.deploy(spec, "1.0.0", log)
        assert (result.version, result.changed) == ("1.0.0", True)
        assert result.details["container_id"] == original
        assert any("restored" in line for line in log.lines), log

        # Killed while a broken new version was starting: it goes, the old one comes back.
        interrupt("1.2.0-broken", start_new=True)
        log = Lines()
        result = await driver.deploy(spec, "1.0.0", log)
        assert result.details["container_id"] == original
        assert [c.id for c in service_containers(env, "jobs")] == [original]
        served = await probe(spec.health_url or "")
        assert (served.healthy, served.version) == (True, "1.0.0")

        # Killed after the new version became healthy: it stays, the old one goes.
        new = interrupt("1.1.0", start_new=True)
        wait_docker_healthy(new)
        log = Lines()
        result = await driver.deploy(spec, "1.1.0", log)
        assert (result.version, result.previous_version) == ("1.1.0", "1.1.0")
        assert result.details["container_id"] == new.id
        assert [c.id for c in service_containers(env, "jobs")] == [new.id]
        assert any("removed" in line and "-previous" in line for line in log.lines), log

        await driver.stop(spec, Lines())
        assert service_containers(env, "jobs") == []
