"""A real Docker engine for tests: a private ``dockerd``, a local registry and sample images.

``DockerEnv`` starts (as root) a ``dockerd`` with its own state directory, socket and
bridge, a ``docker-registry`` on a free loopback port, and builds tiny images ``FROM
scratch`` with the static busybox: no image comes from the internet. Two test runs on one
machine do not share anything (socket, state, bridge, registry port).

Use the session fixture :func:`docker_env` by importing it in a ``conftest.py``::

    from tests.docker_env import docker_env  # noqa: F401

then in a test::

    ref = docker_env.build_and_push("1.0.0")      # "127.0.0.1:<port>/sample:1.0.0"
    config = docker_env.service_config(ports={"8080/tcp": host_port})

The sample image is a web service on container port 8080 (``PORT`` env) answering
``GET /health`` with ``{"status":"ok","version":"<version>"}`` and declaring a Docker
``HEALTHCHECK`` (every second) on it. A version ending in ``-broken`` has no health file:
its health URL answers 404 and Docker reports it unhealthy after about 3 s.

The engine also listens on ``tcp://127.0.0.1:<free port>`` with mutual TLS
(:attr:`DockerEnv.tls_url`, :meth:`DockerEnv.tls_material`: a CA of the run, a server
certificate for ``IP:127.0.0.1`` and a client certificate; :meth:`DockerEnv.rogue_material`
is a client certificate of another CA), so tests reach the same engine as a "remote"
Docker host.

When ``dockerd``, ``docker-registry`` or ``/bin/busybox`` is missing (or not root) the
fixture skips, and fails when ``CI=true``: ``.ci/run`` installs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.errors import ImageNotFound, NotFound

DOCKERD = "/usr/sbin/dockerd"
REGISTRY = "/usr/bin/docker-registry"
BUSYBOX = "/bin/busybox"
SAMPLE_PORT = 8080
BASE_IMAGE = "formula-ops-test/busybox:base"
DEAD_PROXY = "http://127.0.0.1:9"
STARTUP_TIMEOUT = 30.0


class DockerEnvError(RuntimeError):
    """The environment could not be started."""


def missing_requirements() -> list[str]:
    """What this machine lacks to run :class:`DockerEnv` (empty when nothing)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (dockerd runs as root)")
    for path, package in ((DOCKERD, "docker.io"), (REGISTRY, "docker-registry")):
        if not os.access(path, os.X_OK):
            missing.append(f"{path} (Debian package {package})")
    if not os.access(BUSYBOX, os.X_OK):
        missing.append(f"{BUSYBOX} (Debian package busybox-static)")
    for tool in ("containerd", "runc", "ip"):
        if shutil.which(tool) is None:
            missing.append(tool)
    return missing


def require_docker() -> None:
    """Skip the test when the machine lacks Docker; fail instead in CI (``CI=true``)."""
    missing = missing_requirements()
    if not missing:
        return
    message = "real Docker environment unavailable, missing: " + ", ".join(missing)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (.ci/run installs it)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def _stop_process(process: subprocess.Popen[bytes] | None, grace: float) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class DockerEnv:
    """A private dockerd + registry; a context manager (``start`` / ``close``)."""

    def __init__(self) -> None:
        self.state: Path | None = None
        self.socket_path: Path | None = None
        self.bridge: str | None = None  # our own bridge; None: dockerd's docker0
        self.registry_port: int | None = None
        self._dockerd: subprocess.Popen[bytes] | None = None
        self._registry: subprocess.Popen[bytes] | None = None
        self._pushed: dict[tuple[str, str], str] = {}
        self.tls_port: int | None = None
        self.tls_dir: Path | None = None

    # -- what tests use -----------------------------------------------------------

    @property
    def docker_host(self) -> str:
        """The ``DOCKER_HOST`` value of this engine (``unix:///…/docker.sock``)."""
        assert self.socket_path is not None, "DockerEnv is not started"
        return f"unix://{self.socket_path}"

    @property
    def registry(self) -> str:
        """The registry address, ``127.0.0.1:<port>`` (plain HTTP on loopback)."""
        assert self.registry_port is not None, "DockerEnv is not started"
        return f"127.0.0.1:{self.registry_port}"

    def repository(self, name: str = "sample") -> str:
        """An image repository in the registry (no tag): ``127.0.0.1:<port>/<name>``."""
        return f"{self.registry}/{name}"

    @property
    def tls_url(self) -> str:
        """The engine's TCP endpoint with mutual TLS, ``tcp://127.0.0.1:<port>``."""
        assert self.tls_port is not None, "DockerEnv is not started"
        return f"tcp://127.0.0.1:{self.tls_port}"

    def tls_material(self) -> dict[str, str]:
        """PEM texts of a client the engine accepts: ``ca_cert``, ``client_cert``,
        ``client_key`` (an environment docker host's ``tls``)."""
        return self._material("client")

    def rogue_material(self) -> dict[str, str]:
        """Like :meth:`tls_material`, but the client certificate is of another CA."""
        return self._material("rogue")

    def _material(self, client: str) -> dict[str, str]:
        assert self.tls_dir is not None, "DockerEnv is not started"
        return {
            "ca_cert": (self.tls_dir / "ca.pem").read_text(),
            "client_cert": (self.tls_dir / f"{client}-cert.pem").read_text(),
            "client_key": (self.tls_dir / f"{client}-key.pem").read_text(),
        }

    def service_config(self, name: str = "sample", **extra: Any) -> dict[str, Any]:
        """A docker driver config for the sample image on this engine."""
        return {"image": self.repository(name), "docker_host": self.docker_host, **extra}

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        """A docker SDK client of this engine, closed afterwards."""
        client = docker.DockerClient(base_url=self.docker_host, timeout=60)
        try:
            yield client
        finally:
            client.close()

    def build_and_push(
        self, version: str, *, name: str = "sample", keep_local: bool = False
    ) -> str:
        """Build the sample image of ``version``, push it to the registry and return
        ``127.0.0.1:<port>/<name>:<version>``. Unless ``keep_local``, the local tag is
        removed afterwards, so a deploy really pulls it."""
        repository = self.repository(name)
        ref = f"{repository}:{version}"
        if (name, version) in self._pushed and not keep_local:
            return ref
        assert self.state is not None, "DockerEnv is not started"
        context = Path(tempfile.mkdtemp(prefix="image-", dir=self.state))
        www = context / "www"
        www.mkdir()
        (www / "version").write_text(version + "\n")
        if not version.endswith("-broken"):
            (www / "health").write_text(json.dumps({"status": "ok", "version": version}))
        # One instruction: the rest (health check, command) comes from the base image.
        (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY www /www\n")
        with self.client() as client:
            client.images.build(path=str(context), tag=ref, rm=True, forcerm=True)
            output = client.images.push(repository, tag=version)
            for line in output.splitlines():
                if line.strip() and "error" in json.loads(line):
                    raise DockerEnvError(f"push of {ref} failed: {line}")
            if not keep_local:
                client.images.remove(ref)
        shutil.rmtree(context, ignore_errors=True)
        self._pushed[(name, version)] = ref
        return ref

    def has_image(self, ref: str) -> bool:
        with self.client() as client:
            try:
                client.images.get(ref)
            except ImageNotFound:
                return False
            return True

    def remove_containers(self, *, networks: bool = False) -> None:
        """Remove every container (and, with ``networks``, the networks tests created)."""
        with self.client() as client:
            for container in client.containers.list(all=True):
                with contextlib.suppress(NotFound):
                    container.remove(force=True)
            if networks:
                client.networks.prune()

    # -- life cycle ---------------------------------------------------------------

    def __enter__(self) -> DockerEnv:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        try:
            self.state = Path(tempfile.mkdtemp(prefix="formula-ops-docker-"))
            self.socket_path = self.state / "docker.sock"
            self._make_certificates()
            self._start_dockerd()
            self._start_registry()
            self._build_base_image()
        except BaseException:
            self.close()
            raise

    def _create_bridge(self) -> str | None:
        """A bridge of our own (so runs do not share docker0); None when impossible."""
        name = "fo" + secrets.token_hex(4)
        used = _run("ip", "-4", "-o", "addr").stdout
        for _ in range(20):
            subnet = f"10.{secrets.choice(range(200, 250))}.{secrets.randbelow(256)}"
            if f" {subnet}." not in used:
                break
        steps = (
            ("ip", "link", "add", "name", name, "type", "bridge"),
            ("ip", "addr", "add", f"{subnet}.1/24", "dev", name),
            ("ip", "link", "set", name, "up"),
        )
        for step in steps:
            if _run(*step).returncode != 0:
                _run("ip", "link", "del", name)
                return None
        return name

    def _make_certificates(self) -> None:
        """A CA, a server certificate for IP:127.0.0.1 and two client certificates (one
        of another CA), with openssl; EC keys (fast)."""
        assert self.state is not None
        self.tls_dir = directory = self.state / "tls"
        directory.mkdir(mode=0o700)
        self.tls_port = free_port()

        def openssl(*args: str) -> None:
            done = subprocess.run(
                ["openssl", *args], cwd=directory, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise DockerEnvError(f"openssl {args[0]} failed: {done.stderr[-500:]}")

        key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        for ca in ("ca", "rogue-ca"):
            openssl(
                "req", "-x509", *key, "-keyout", f"{ca}-key.pem", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=formula-ops test {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            )  # fmt: skip
        for name, ca, extensions in (
            ("server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            ("client", "ca", "extendedKeyUsage=clientAuth\n"),
            ("rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n"),
        ):
            (directory / f"{name}.ext").write_text(extensions)
            openssl(
                "req", "-new", *key, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
                "-subj", f"/CN={name}",
            )  # fmt: skip
            openssl(
                "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
                f"{ca}-key.pem", "-CAcreateserial", "-out", f"{name}-cert.pem", "-days", "2",
                "-extfile", f"{name}.ext",
            )  # fmt: skip

    def _start_dockerd(self) -> None:
        assert self.state is not None
        assert self.socket_path is not None
        self.bridge = self._create_bridge()
        config_file = self.state / "daemon.json"
        config_file.write_text("{}")
        args = [
            DOCKERD,
            f"--config-file={config_file}",
            f"--host=unix://{self.socket_path}",
            f"--data-root={self.state / 'root'}",
            f"--exec-root={self.state / 'exec'}",
            f"--pidfile={self.state / 'dockerd.pid'}",
            "--ip=127.0.0.1",
            "--storage-driver=overlay2",
        ]
        if self.tls_dir is not None:
            args += [
                f"--host=tcp://127.0.0.1:{self.tls_port}",
                "--tlsverify",
                f"--tlscacert={self.tls_dir / 'ca.pem'}",
                f"--tlscert={self.tls_dir / 'server-cert.pem'}",
                f"--tlskey={self.tls_dir / 'server-key.pem'}",
            ]
        if self.bridge is not None:
            # Published ports go through docker-proxy; no iptables rules shared with others.
            args += [f"--bridge={self.bridge}", "--iptables=false", "--ip-forward=false"]
        env = {
            **os.environ,
            "HTTP_PROXY": DEAD_PROXY,
            "HTTPS_PROXY": DEAD_PROXY,
            "NO_PROXY": "127.0.0.1,localhost",
            "http_proxy": DEAD_PROXY,
            "https_proxy": DEAD_PROXY,
            "no_proxy": "127.0.0.1,localhost",
        }
        env.pop("DOCKER_HOST", None)
        log = (self.state / "dockerd.log").open("wb")
        with log:
            self._dockerd = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C of pytest reaches the teardown, not dockerd
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _ping(self.socket_path):
            if self._dockerd.poll() is not None or time.monotonic() > deadline:
                raise DockerEnvError("dockerd did not start:\n" + _tail(self.state / "dockerd.log"))
            time.sleep(0.05)

    def _start_registry(self) -> None:
        assert self.state is not None
        self.registry_port = free_port()
        storage = self.state / "registry"
        storage.mkdir()
        config = self.state / "registry.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "version": 0.1,
                    "log": {"level": "warn", "accesslog": {"disabled": True}},
                    "storage": {
                        "filesystem": {"rootdirectory": str(storage)},
                        "delete": {"enabled": True},
                    },
                    "http": {
                        "addr": f"127.0.0.1:{self.registry_port}",
                        "secret": secrets.token_hex(16),
                    },
                }
            )
        )
        log = (self.state / "registry.log").open("wb")
        with log:
            self._registry = subprocess.Popen(
                [REGISTRY, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        url = f"http://{self.registry}/v2/"
        with httpx.Client(trust_env=False, timeout=1.0) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url).status_code == 200:
                        return
                if self._registry.poll() is not None or time.monotonic() > deadline:
                    raise DockerEnvError(
                        "docker-registry did not start:\n" + _tail(self.state / "registry.log")
                    )
                time.sleep(0.05)

    def _build_base_image(self) -> None:
        assert self.state is not None
        context = self.state / "base-image"
        context.mkdir()
        shutil.copy2(BUSYBOX, context / "busybox")
        (context / "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            f"ENV PORT={SAMPLE_PORT}\n"
            f"EXPOSE {SAMPLE_PORT}\n"
            "HEALTHCHECK --interval=1s --timeout=2s --retries=2 "
            "CMD wget -q -O- http://127.0.0.1:${PORT}/health || exit 1\n"
            # A shell as PID 1 that stops on SIGTERM (httpd as PID 1 would ignore it).
            'CMD ["/bin/sh", "-c", "httpd -f -p 0.0.0.0:${PORT} -h /www & '
            "trap 'kill $! 2>/dev/null; exit 0' TERM INT; wait\"]\n"
        )
        with self.client() as client:
            client.images.build(path=str(context), tag=BASE_IMAGE, rm=True, forcerm=True)
        shutil.rmtree(context, ignore_errors=True)

    def close(self) -> None:
        """Remove the containers, stop the registry and dockerd, drop the state."""
        if self._dockerd is not None and self._dockerd.poll() is None:
            with contextlib.suppress(Exception):
                self.remove_containers(networks=True)
        _stop_process(self._registry, 5)
        self._registry = None
        self._stop_dockerd()
        if self.state is not None:
            _run("umount", str(self.state / "exec" / "netns" / "default"))
            if self.bridge is not None:
                _run("ip", "link", "del", self.bridge)
            elif self._dockerd is not None:
                _run("ip", "link", "del", "docker0")  # RECIPES: dockerd's default bridge
            if not self._unmount_all(self.state):
                shutil.rmtree(self.state, ignore_errors=True)
        self._dockerd = None
        self.bridge = None
        self.state = None
        self.tls_dir = None
        self.tls_port = None

    def _stop_dockerd(self) -> None:
        process = self._dockerd
        if process is None or process.poll() is not None or self.state is None:
            return
        containerd_pid = self.state / "exec" / "containerd" / "containerd.pid"
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            # containerd is dockerd's child and may outlive a killed dockerd.
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(containerd_pid.read_text().strip()), signal.SIGKILL)

    @staticmethod
    def _unmount_all(state: Path) -> list[str]:
        """Unmount what is left under ``state``; returns the mount points that remain."""
        prefix = str(state) + "/"

        def mounted() -> list[str]:
            with open("/proc/self/mounts") as mounts:
                points = [line.split()[1] for line in mounts]
            return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)

        for point in mounted():
            _run("umount", "-l", point)
        return mounted()


@pytest.fixture(scope="session")
def docker_env() -> Iterator[DockerEnv]:
    """A started :class:`DockerEnv` for the whole session (skips/fails when unavailable)."""
    require_docker()
    env = DockerEnv()
    try:
        env.start()
    except DockerEnvError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield env
    finally:
        env.close()
