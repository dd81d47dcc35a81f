"""The docker driver against a real dockerd and registry (:mod:`tests.docker_env`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from docker.errors import NotFound

from app.core.settings import DockerSettings
from app.drivers.base import DriverError, DriverSettings, ServiceSpec, UnhealthyError
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
    return DockerDriver(DriverSettings(state_dir=tmp_path))


@pytest.fixture
def permissive(tmp_path: Path) -> DockerDriver:
    """A driver whose settings allow shared network namespaces and sensitive binds."""
    allow = DockerSettings(allow_host_network=True, allow_sensitive_binds=True)
    return DockerDriver(DriverSettings(state_dir=tmp_path, docker=allow))


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
            "mounts": {},
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
            ({"image": "sample", "network": "my net"}, "network"),
            (
                {"image": "sample", "mounts": {"/d": {"type": "bind", "source": "data"}}},
                "source 'data' is not an absolute path",
            ),
            (
                {"image": "sample", "mounts": {"d": {"type": "volume", "source": "v1"}}},
                "target 'd' is not an absolute path",
            ),
            (
                {"image": "sample", "mounts": {"/d": {"type": "bind", "source": "/a/../b"}}},
                "not a normalised path",
            ),
            (
                {"image": "sample", "mounts": {"/d/": {"type": "volume", "source": "v1"}}},
                "not a normalised path",
            ),
            (
                {"image": "sample", "mounts": {"/": {"type": "volume", "source": "data"}}},
                "target '/'",
            ),
            (
                {"image": "sample", "mounts": {"/d": {"type": "tmpfs", "source": "x"}}},
                "mounts./d",
            ),
        ],
    )
    def test_rejects_with_a_readable_message(
        self, driver: DockerDriver, config: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match="invalid docker config") as error:
            driver.validate_config(config)
        assert message in str(error.value)

    @pytest.mark.parametrize(
        ("extra", "setting"),
        [
            ({"network": "host"}, "FORMULA_OPS_DOCKER__ALLOW_HOST_NETWORK"),
            ({"network": "container:db"}, "FORMULA_OPS_DOCKER__ALLOW_HOST_NETWORK"),
            (
                {"mounts": {"/host": {"type": "bind", "source": "/"}}},
                "FORMULA_OPS_DOCKER__ALLOW_SENSITIVE_BINDS",
            ),
            (
                {"mounts": {"/s": {"type": "bind", "source": "/var/run/docker.sock"}}},
                "FORMULA_OPS_DOCKER__ALLOW_SENSITIVE_BINDS",
            ),
            (
                {"mounts": {"/r": {"type": "bind", "source": "/run", "read_only": True}}},
                "FORMULA_OPS_DOCKER__ALLOW_SENSITIVE_BINDS",
            ),
            (
                {"mounts": {"/s": {"type": "bind", "source": "/srv/x/docker.sock"}}},
                "FORMULA_OPS_DOCKER__ALLOW_SENSITIVE_BINDS",
            ),
        ],
    )
    async def test_privileged_settings_need_the_server_setting(
        self,
        driver: DockerDriver,
        permissive: DockerDriver,
        extra: dict[str, Any],
        setting: str,
    ) -> None:
        config = {"image": "sample", **extra}
        with pytest.raises(ValueError, match="docker config refused") as error:
            driver.validate_config(config)
        assert f"{setting}=true" in str(error.value)
        assert permissive.validate_config(config)["image"] == "sample"
        # At deploy time too: a config stored while it was allowed is refused.
        spec = ServiceSpec(ENVIRONMENT, "web", "docker", permissive.validate_config(config))
        with pytest.raises(DriverError, match=setting):
            await driver.deploy(spec, "1.0.0", Lines())

    def test_declared_mounts_fill_defaults(self, driver: DockerDriver) -> None:
        config = driver.validate_config(
            {
                "image": "sample",
                "mounts": {
                    "/var/lib/web": {"type": "volume", "source": "web-data"},
                    "/conf": {"type": "bind", "source": "/srv/conf", "read_only": True},
                },
            }
        )
        assert config["mounts"] == {
            "/var/lib/web": {"type": "volume", "source": "web-data", "read_only": False},
            "/conf": {"type": "bind", "source": "/srv/conf", "read_only": True},
        }

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

    async def test_host_network_only_when_the_settings_allow_it(
        self, driver: DockerDriver, permissive: DockerDriver, clean_engine: DockerEnv
    ) -> None:
        env = clean_engine
        env.build_and_push("1.0.0")
        env.build_and_push("1.1.0")
        port = free_port()
        # In the host's namespace the sample must listen on loopback and a free port.
        command = [
            "/bin/sh",
            "-c",
            "httpd -f -p 127.0.0.1:${PORT} -h /www & trap 'kill $! 2>/dev/null; exit 0' TERM; wait",
        ]

        def spec_of(config: dict[str, Any]) -> ServiceSpec:
            return ServiceSpec(
                ENVIRONMENT,
                "hostnet",
                "docker",
                config,
                health_url=f"http://127.0.0.1:{port}/health",
                health_timeout_seconds=20,
            )

        base = env.service_config(env={"PORT": str(port)}, command=command)
        host = spec_of(permissive.validate_config({**base, "network": "host"}))
        with pytest.raises(DriverError, match="FORMULA_OPS_DOCKER__ALLOW_HOST_NETWORK=true"):
            await driver.deploy(host, "1.0.0", Lines())
        assert service_containers(env, "hostnet") == []

        first = await permissive.deploy(host, "1.0.0", Lines())
        with env.client() as client:
            running = client.containers.get(first.details["container_id"])
            assert running.attrs["HostConfig"]["NetworkMode"] == "host"

        # A config without a network: the old container's host mode is not carried over
        # without the setting, and the old container keeps running untouched.
        plain = spec_of(driver.validate_config(base))
        with pytest.raises(DriverError, match="network mode 'host'") as refused:
            await driver.deploy(plain, "1.1.0", Lines())
        assert "ALLOW_HOST_NETWORK" in str(refused.value)
        assert [c.id for c in service_containers(env, "hostnet")] == [running.id]
        served = await probe(plain.health_url or "")
        assert (served.healthy, served.version) == (True, "1.0.0")

        second = await permissive.deploy(plain, "1.1.0", Lines())
        with env.client() as client:
            new = client.containers.get(second.details["container_id"])
            assert new.attrs["HostConfig"]["NetworkMode"] == "host"
        await permissive.stop(plain, Lines())
        assert service_containers(env, "hostnet") == []

    async def test_declared_mounts_keep_data_across_deploys(
        self, driver: DockerDriver, clean_engine: DockerEnv, tmp_path: Path
    ) -> None:
        env = clean_engine
        env.build_and_push("1.0.0")
        env.build_and_push("1.1.0")
        port = free_port()
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "site.txt").write_text("from the host\n")
        volume = f"store-data-{port}"
        mounts = {
            "/www/data": {"type": "volume", "source": volume},
            "/www/conf": {"type": "bind", "source": str(conf), "read_only": True},
        }
        spec = make_spec(driver, env, "store", port=port, mounts=mounts)
        first = await driver.deploy(spec, "1.0.0", Lines())
        with env.client() as client:
            container = client.containers.get(first.details["container_id"])
            code, output = container.exec_run(
                ["sh", "-c", "echo written-by-1.0.0 > /www/data/note"]
            )
            assert code == 0, output
            code, _ = container.exec_run(["sh", "-c", "echo x > /www/conf/new"])
            assert code != 0, "the bind mount is read-only"

        second = await driver.deploy(spec, "1.1.0", Lines())
        assert (second.previous_version, second.changed) == ("1.0.0", True)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            base = f"http://127.0.0.1:{port}"
            assert (await http.get(f"{base}/version")).text.strip() == "1.1.0"
            assert (await http.get(f"{base}/data/note")).text.strip() == "written-by-1.0.0"
            assert (await http.get(f"{base}/conf/site.txt")).text.strip() == "from the host"
        with env.client() as client:
            new = client.containers.get(second.details["container_id"])
            mounted = {m["Destination"]: m for m in new.attrs["Mounts"]}
            assert mounted["/www/data"]["Name"] == volume
            assert mounted["/www/conf"]["RW"] is False

        # The same service without the mounts declared: the deploy would lose them, so it
        # is refused and the running container stays.
        undeclared = make_spec(driver, env, "store", port=port)
        with pytest.raises(DriverError, match="does not declare") as refused:
            await driver.deploy(undeclared, "1.0.0", Lines())
        assert f"/www/data (volume {volume})" in str(refused.value)
        assert "/www/conf (bind" in str(refused.value)
        assert [c.id for c in service_containers(env, "store")] == [new.id]
        served = await probe(spec.health_url or "")
        assert (served.healthy, served.version) == (True, "1.1.0")
        await driver.stop(spec, Lines())

    async def test_a_container_of_someone_else_is_left_untouched(
        self, driver: DockerDriver, clean_engine: DockerEnv
    ) -> None:
        env = clean_engine
        ref = env.build_and_push("1.0.0")
        with env.client() as client:
            client.images.pull(env.repository(), tag="1.0.0")
            foreign = client.containers.run(
                ref, name="shared-name", detach=True, labels={"owner": "someone"}
            )
            other = client.containers.run(
                ref,
                name="other-service",
                detach=True,
                labels={LABEL_ENVIRONMENT: ENVIRONMENT, LABEL_SERVICE: "elsewhere"},
            )
        spec = make_spec(driver, env, "claim", container_name="shared-name")
        log = Lines()
        with pytest.raises(DriverError, match="not created by formula-ops") as refused:
            await driver.deploy(spec, "1.0.0", log)
        assert "'shared-name'" in str(refused.value)
        assert "left untouched" in str(refused.value)
        assert await driver.current(spec) is None
        await driver.stop(spec, log)
        assert any("left untouched" in line for line in log.lines), log

        taken = make_spec(driver, env, "claim", container_name="other-service")
        with pytest.raises(DriverError, match=f"belongs to service {ENVIRONMENT}/elsewhere"):
            await driver.deploy(taken, "1.0.0", Lines())

        with env.client() as client:
            for container in (foreign, other):
                after = client.containers.get(container.id)
                assert after.name == container.name
                assert after.attrs["State"]["Running"], after.attrs["State"]
        assert service_containers(env, "claim") == []
