"""Docker engines besides the local one: how an environment's docker host is validated,
and one long-lived client per engine, over mutual TLS against the suite's real dockerd
(its ``tcp://127.0.0.1`` endpoint) although the process sets ``REQUESTS_CA_BUNDLE``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException
from docker.tls import TLSConfig
from pydantic import ValidationError
from requests.exceptions import RequestException

from app.core.redaction import redact_text, redact_value
from app.core.registry import Registry
from app.drivers.base import DRIVERS, DriverError, DriverSettings
from app.drivers.docker import DockerDriver, EngineClient, ssh_options
from app.drivers.docker_config import DockerEngine, DockerHost, DockerTLS, connection, host_name
from app.drivers.pool import DriverPool
from app.drivers.registration import register
from tests.docker_env import DockerEnv

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


# -- configuration (no engine) ---------------------------------------------------------


def test_docker_host_urls() -> None:
    for url in (
        "ssh://deploy@db.example.com",
        "ssh://deploy@10.0.0.5:2222",
        "ssh://host-only",
        "tcp://127.0.0.1:2375",
        "tcp://[::1]:2375",
        "tcp://localhost:2375",
        "unix:///var/run/docker.sock",
    ):
        assert DockerHost(name="h", url=url).url == url
    for url, message in (
        ("tcp://10.1.2.3:2376", "needs tls"),
        ("tcp://docker.example.com:2376", "needs tls"),
        ("ssh://deploy:secret@host", "pattern"),
        ("ssh://deploy@host:99999", "pattern"),
        ("https://host:2376", "pattern"),
        ("unix://relative.sock", "pattern"),
        ("tcp://host:2376/path", "pattern"),
    ):
        with pytest.raises(ValidationError, match=message):
            DockerHost(name="h", url=url)


def test_ssh_uses_the_ssh_program_when_there_is_one() -> None:
    assert ssh_options("tcp://127.0.0.1:2375") == {}
    assert ssh_options("ssh://deploy@host") == {"use_ssh_client": True}  # /usr/bin/ssh here
    # The SDK turns the URL into its ssh adapter without connecting before the first call.
    engine = DockerEngine("ssh://deploy@127.0.0.1:1")
    assert connection({"docker_host": "ssh://deploy@127.0.0.1:1"}) == engine


def test_names_and_urls_of_a_service_docker_host() -> None:
    assert host_name({"docker_host": "prod-1"}) == "prod-1"
    assert host_name({"docker_host": "tcp://127.0.0.1:2375"}) is None
    assert host_name({}) is None
    assert connection({}) is None


async def test_an_unresolved_host_name_is_refused_not_dialled(tmp_path: Path) -> None:
    driver = DockerDriver(DriverSettings(state_dir=tmp_path), "prod-1")
    with pytest.raises(DriverError, match="must be resolved"):
        await driver.client()


def test_the_client_key_is_a_secret_everywhere(docker_env: DockerEnv) -> None:
    material = docker_env.tls_material()
    key = material["client_key"]
    host = DockerHost(name="h", url=docker_env.tls_url, tls=DockerTLS(**material))
    body = key.split("-----")[2].strip()[:40]
    assert body not in repr(host)
    assert body not in repr(host.engine())
    shown = redact_value(host.model_dump(mode="json"))
    assert shown["tls"]["client_key"] == "[redacted]"
    assert shown["tls"]["client_cert"] == material["client_cert"]
    assert body not in redact_text(f"could not load {key} from file")


# -- one client per engine, over mutual TLS -----------------------------------------------


def test_tls_client_verifies_the_engine_against_its_own_ca(
    docker_env: DockerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)  # as on this machine
    monkeypatch.setenv("CURL_CA_BUNDLE", SYSTEM_BUNDLE)
    engine = DockerEngine(docker_env.tls_url, DockerTLS(**docker_env.tls_material()))
    client = EngineClient(engine)
    sdk = client.get()
    try:
        assert sdk.ping() is True
        assert client.get() is sdk  # one client, kept
        directory = Path(str(client._tls_dir))
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        files = sorted(p.name for p in directory.iterdir())
        assert files == ["ca.pem", "cert.pem", "key.pem"]
        for path in directory.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert os.environ["REQUESTS_CA_BUNDLE"] == SYSTEM_BUNDLE  # the process keeps it
    finally:
        client.close()
    assert not directory.exists()


def test_the_engine_refuses_clients_without_its_certificate(docker_env: DockerEnv) -> None:
    """What the driver's failures below rest on: the endpoint demands a client cert."""
    tls_dir = docker_env.tls_dir
    assert tls_dir is not None
    no_cert = TLSConfig(ca_cert=str(tls_dir / "ca.pem"), verify=True)
    with pytest.raises((DockerException, RequestException)):
        sdk = docker.DockerClient(
            base_url=docker_env.tls_url, tls=no_cert, version="1.24", timeout=10
        )
        sdk.api.trust_env = False
        try:
            sdk.ping()
        finally:
            sdk.close()
    rogue = EngineClient(DockerEngine(docker_env.tls_url, DockerTLS(**docker_env.rogue_material())))
    with pytest.raises((DockerException, RequestException)):
        rogue.get()
    assert rogue._tls_dir is None  # its files are gone with the failed attempt


async def test_the_pool_keeps_one_driver_and_client_per_engine(
    docker_env: DockerEnv, tmp_path: Path
) -> None:
    registry = Registry()
    register(registry)
    pool = DriverPool(registry[DRIVERS], DriverSettings(state_dir=tmp_path))
    material = DockerTLS(**docker_env.tls_material())
    config = {"image": "x/y", "docker_host": "remote"}
    first = pool.get("docker", config, connection=DockerEngine(docker_env.tls_url, material))
    again = pool.get(
        "docker",
        {"image": "x/other", "docker_host": "same-engine-other-name"},
        connection=DockerEngine(docker_env.tls_url, DockerTLS(**docker_env.tls_material())),
    )
    local = pool.get("docker", {"image": "x/y", "docker_host": docker_env.docker_host})
    assert first is again
    assert local is not first
    assert isinstance(first, DockerDriver)
    client = await first.client()
    assert await first.client() is client
    assert (await local.client()).ping() is True
    tls_dir = str(first._clients[first.engine]._tls_dir)
    assert os.path.isdir(tls_dir)  # noqa: ASYNC240
    await pool.aclose()
    assert not os.path.exists(tls_dir)  # noqa: ASYNC240
    with pytest.raises(DriverError, match="closed"):
        await first.client()
