"""The ``docker`` driver: one container per service, replaced by a health-checked swap.

Containers carry the labels ``formula-ops.environment``, ``formula-ops.service`` and
``formula-ops.version``; the service's container is named ``formula-ops-<env>-<service>``
unless the config names it. The driver renames, replaces and removes only containers
that carry the service's labels: a deploy whose name (or ``<name>-previous``) is held
by another container fails and leaves that container untouched.

A deploy renames the running container aside (``<name>-previous``), starts the new
version under the name with the old container's settings (environment, labels,
published ports, networks, restart policy; the config wins where both set a value) and
the mounts the config declares, waits until it is healthy, then removes the old
container and keeps its image for a rollback. When the new version does not become
healthy it is removed and the old container is renamed back and started again.

Mounts are never copied: a deploy refuses to replace a container that has a named
volume or bind mount the config does not declare (its data would be lost). A network
mode that shares the host's or another container's namespace (``host``,
``container:<name>``) is used, declared or carried over, only when
``FORMULA_OPS_DOCKER__ALLOW_HOST_NETWORK`` allows it; bind mounts of ``/`` or of a Docker
socket only with ``FORMULA_OPS_DOCKER__ALLOW_SENSITIVE_BINDS``.

When ports are published (or the network is the host's) the old container is stopped
before the new one starts (a host port cannot be bound twice), so the swap has a short
gap; otherwise both run side by side until the new one is healthy.

A worker killed mid-deploy leaves ``<name>-previous`` behind: the next deploy keeps the
container under the name when it runs healthy, otherwise restores the previous one.

The docker SDK is synchronous: every call runs in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, ParamSpec, TypeVar

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.tls import TLSConfig
from docker.types import Mount
from pydantic import ValidationError

from app.drivers.base import (
    Deployed,
    DeployResult,
    DriverError,
    DriverSettings,
    HealthResult,
    LogLine,
    ServiceSpec,
    UnhealthyError,
)
from app.drivers.docker_config import (
    CONTAINER_NAME,
    HOST_NETWORK_SETTING,
    LABEL_ENVIRONMENT,
    LABEL_PREFIX,
    LABEL_SERVICE,
    LABEL_VERSION,
    PREVIOUS_SUFFIX,
    DockerConfig,
    DockerEngine,
    DockerTLS,
    engine_socket,
    host_name,
    policy_problems,
    readable,
    refused,
    shares_namespace,
)
from app.drivers.health import probe, wait_healthy

# What a call to the engine may raise: the SDK's errors, and requests' (OSError) ones.
ENGINE_ERRORS = (DockerException, OSError)

# A health check of a container that already runs: how long its health URL may take.
EXISTING_HEALTH_TIMEOUT = 3.0
LOG_TAIL_LINES = 10

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

P = ParamSpec("P")
T = TypeVar("T")


def _explain(exc: BaseException) -> str:
    if isinstance(exc, APIError) and exc.explanation:
        text = str(exc.explanation)
    else:
        text = str(exc) or type(exc).__name__
    return text if len(text) <= 400 else text[:400] + "…"


def _labels_of(container: Any) -> dict[str, str]:
    labels = container.attrs.get("Config", {}).get("Labels") or {}
    return {str(key): str(value) for key, value in labels.items()}


def _owner_of(container: Any) -> tuple[str, str] | None:
    """The (environment, service) whose labels ``container`` carries, if any."""
    labels = _labels_of(container)
    if LABEL_ENVIRONMENT in labels and LABEL_SERVICE in labels:
        return labels[LABEL_ENVIRONMENT], labels[LABEL_SERVICE]
    return None


def _owned(container: Any, spec: ServiceSpec) -> bool:
    """Whether ``container`` was created for ``spec``'s service (it carries its labels)."""
    return _owner_of(container) == (spec.environment, spec.name)


def _foreign(container: Any, spec: ServiceSpec) -> str:
    owner = _owner_of(container)
    whose = (
        f"it belongs to service {owner[0]}/{owner[1]}"
        if owner
        else f"it has no {LABEL_ENVIRONMENT}/{LABEL_SERVICE} labels (not created by formula-ops)"
    )
    return (
        f"container {container.name!r} ({str(container.id)[:12]}) is not "
        f"{spec.environment}/{spec.name}'s: {whose}; it is left untouched. "
        "Remove or rename it, or set another container_name"
    )


def _version_of(container: Any) -> str | None:
    return _labels_of(container).get(LABEL_VERSION)


def _image_of(container: Any) -> str:
    return str(container.attrs.get("Config", {}).get("Image") or "")


def _is_running(container: Any) -> bool:
    return bool(container.attrs.get("State", {}).get("Running"))


def _health_status(container: Any) -> str | None:
    """Docker's health status, or None when the container has no health check."""
    health = container.attrs.get("State", {}).get("Health")
    if not health:
        return None
    return str(health.get("Status") or "starting")


def _health_output(container: Any) -> str:
    health = container.attrs.get("State", {}).get("Health") or {}
    entries = health.get("Log") or []
    if not entries:
        return ""
    output = str(entries[-1].get("Output") or "").strip().replace("\n", " ")
    code = entries[-1].get("ExitCode")
    text = f"exit code {code}" + (f": {output}" if output else "")
    return text if len(text) <= 200 else text[:200] + "…"


def _port_bindings(bindings: dict[str, Any]) -> dict[str, Any]:
    """``HostConfig.PortBindings`` of an inspected container as docker-py ``ports``."""
    ports: dict[str, Any] = {}
    for container_port, entries in bindings.items():
        if not entries:
            continue
        values: list[Any] = []
        for entry in entries:
            host_ip = entry.get("HostIp") or ""
            host_port = int(entry["HostPort"]) if entry.get("HostPort") else None
            values.append((host_ip, host_port) if host_ip else host_port)
        ports[container_port] = values[0] if len(values) == 1 else values
    return ports


def _env_dict(entries: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        result[key] = value
    return result


# The API version a client starts with, before it asks the engine for its own (every
# engine the SDK supports speaks it).
BOOTSTRAP_API_VERSION = "1.24"
ENGINE_TIMEOUT = 60


class EngineClient:
    """The one docker SDK client of an engine, made on first use (thread-safe) and
    kept until :meth:`close`. For TLS, the CA, certificate and key are written to
    private files (a 0700 directory, 0600 files) that :meth:`close` removes.

    The client verifies the engine against the engine's CA only: ``requests`` would let
    ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` of the process replace the CA set on the
    session (psf/requests#3829), and apply proxy variables; the client's session
    ignores the process environment instead (``trust_env = False``).
    """

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self._client: Any = None
        self._tls_dir: str | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None:
                with suppress(Exception):
                    client.close()
            self._remove_tls_files()

    def _make(self) -> Any:
        url = self.engine.url
        tls: TLSConfig | bool = False
        if self.engine.tls is not None:
            tls = self._tls_config(self.engine.tls)
        kwargs: dict[str, Any] = {"version": BOOTSTRAP_API_VERSION, "timeout": ENGINE_TIMEOUT}
        try:
            if url is None:
                client = docker.from_env(**kwargs)
            else:
                client = docker.DockerClient(base_url=url, tls=tls, **ssh_options(url), **kwargs)
            client.api.trust_env = False
            if self.engine.tls is not None:
                client.api.verify = os.path.join(str(self._tls_dir), "ca.pem")
            client.api._version = str(client.api.version(api_version=False)["ApiVersion"])
        except BaseException:
            self._remove_tls_files()
            raise
        return client

    def _tls_config(self, material: DockerTLS) -> TLSConfig:
        self._remove_tls_files()
        directory = tempfile.mkdtemp(prefix="formula-ops-docker-tls-")  # mode 0700
        self._tls_dir = directory
        paths = {}
        for name, text in (
            ("ca.pem", material.ca_cert),
            ("cert.pem", material.client_cert),
            ("key.pem", material.client_key),
        ):
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(text)
            paths[name] = path
        return TLSConfig(
            client_cert=(paths["cert.pem"], paths["key.pem"]),
            ca_cert=paths["ca.pem"],
            verify=True,
        )

    def _remove_tls_files(self) -> None:
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None


def ssh_options(url: str) -> dict[str, Any]:
    """How the SDK reaches an ``ssh://`` engine: the ``ssh`` program when installed (it
    uses the worker's ~/.ssh/config, agent and known_hosts), else paramiko. The remote
    user needs the ``docker`` CLI (``docker system dial-stdio``)."""
    if not url.startswith("ssh://"):
        return {}
    return {"use_ssh_client": shutil.which("ssh") is not None}


class _Progress:
    """Sends progress lines to the step's log and keeps them for the result's output."""

    def __init__(self, log: LogLine) -> None:
        self._log = log
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)
        await self._log(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class DockerDriver:
    """One instance per Docker engine (``docker_host``; None: ``DOCKER_HOST`` or the
    default socket), kept by the driver pool for the life of the process."""

    name = "docker"

    def __init__(
        self, settings: DriverSettings, connection: DockerEngine | str | None = None
    ) -> None:
        self.settings = settings
        self.engine = (
            connection if isinstance(connection, DockerEngine) else DockerEngine(connection)
        )
        self.docker_host = self.engine.url
        # One client per engine: this instance's (the pool makes one instance per engine),
        # or, for an instance made without one, those its configs' URLs name.
        self._clients: dict[DockerEngine, EngineClient] = {}
        self._lock = threading.Lock()
        self._closed = False

    async def aclose(self) -> None:
        """Close the engine clients and remove their TLS files."""
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await asyncio.to_thread(client.close)

    # -- configuration --------------------------------------------------------------

    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        try:
            model = DockerConfig.model_validate(config)
        except ValidationError as exc:
            raise ValueError(readable(exc)) from None
        problems = policy_problems(model, self.settings.docker)
        if problems:
            raise ValueError(refused(problems))
        return model.model_dump(mode="json")

    def _config(self, spec: ServiceSpec) -> DockerConfig:
        try:
            config = DockerConfig.model_validate(spec.config)
        except ValidationError as exc:
            raise DriverError(f"{spec.environment}/{spec.name}: {readable(exc)}") from None
        engine_url = self._engine(config).url
        socket_of = config.model_copy(update={"docker_host": engine_url})
        problems = policy_problems(
            config, self.settings.docker, engine_socket=engine_socket(socket_of)
        )
        if problems:
            raise DriverError(f"{spec.environment}/{spec.name}: {refused(problems)}")
        return config

    @staticmethod
    def container_name(spec: ServiceSpec, config: DockerConfig) -> str:
        name = config.container_name or f"formula-ops-{spec.environment}-{spec.name}"
        if not CONTAINER_NAME.match(name):
            raise DriverError(f"{name!r} is not a valid container name; set container_name")
        return name

    # -- plumbing -------------------------------------------------------------------

    @staticmethod
    async def _call(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)

    def _engine(self, config: DockerConfig | None = None) -> DockerEngine:
        """The engine of this instance (the pool's), else the one the config's URL names."""
        engine = self.engine
        if engine.url is None and engine.tls is None and config and config.docker_host:
            engine = DockerEngine(config.docker_host)
        if engine.url is not None and host_name({"docker_host": engine.url}) is not None:
            raise DriverError(
                f"docker_host {engine.url!r} names a docker host of the environment; "
                "it must be resolved to its URL before the driver is used"
            )
        return engine

    def _client_of(self, engine: DockerEngine) -> EngineClient:
        with self._lock:
            if self._closed:
                raise DriverError("the docker driver is closed")
            client = self._clients.get(engine)
            if client is None:
                client = self._clients[engine] = EngineClient(engine)
            return client

    @asynccontextmanager
    async def _connect(self, config: DockerConfig) -> AsyncIterator[Any]:
        """The engine's long-lived client (made on first use, kept until ``aclose``)."""
        engine_client = self._client_of(self._engine(config))
        try:
            client = await self._call(engine_client.get)
        except ENGINE_ERRORS as exc:
            raise DriverError(f"cannot reach the Docker engine: {_explain(exc)}") from None
        try:
            yield client
        except ENGINE_ERRORS as exc:
            raise DriverError(f"Docker engine error: {_explain(exc)}") from exc

    async def client(self) -> Any:
        """The docker SDK client of this instance's engine (shared: do not close it);
        raises :class:`DriverError` when the engine cannot be reached."""
        engine_client = self._client_of(self._engine())
        try:
            return await self._call(engine_client.get)
        except ENGINE_ERRORS as exc:
            raise DriverError(f"cannot reach the Docker engine: {_explain(exc)}") from None

    @staticmethod
    def _get(client: Any, name: str) -> Any | None:
        try:
            container = client.containers.get(name)
        except NotFound:
            return None
        return container if container.name == name else None

    @staticmethod
    def _labelled(client: Any, spec: ServiceSpec, *, running_only: bool) -> list[Any]:
        filters = {
            "label": [f"{LABEL_ENVIRONMENT}={spec.environment}", f"{LABEL_SERVICE}={spec.name}"]
        }
        return list(client.containers.list(all=not running_only, filters=filters))

    def _service_container(
        self, client: Any, spec: ServiceSpec, name: str, *, running_only: bool
    ) -> Any | None:
        """The service's container under ``name``, else a running one carrying the
        service labels. A container of someone else under ``name`` is never it."""
        named = self._get(client, name)
        if named is not None and _owned(named, spec) and (_is_running(named) or not running_only):
            return named
        for container in self._labelled(client, spec, running_only=True):
            if container.name != name + PREVIOUS_SUFFIX:
                return container
        return None

    def _check_names(self, client: Any, spec: ServiceSpec, name: str) -> None:
        """Refuse when ``name`` or ``<name>-previous`` is held by another container than
        the service's own: a deploy renames, replaces and removes containers there."""
        for candidate in (name, name + PREVIOUS_SUFFIX):
            container = self._get(client, candidate)
            if container is not None and not _owned(container, spec):
                raise DriverError(_foreign(container, spec))

    @staticmethod
    def _refresh(container: Any) -> Any:
        container.reload()
        return container

    @staticmethod
    def _log_tail(container: Any) -> str:
        try:
            raw = container.logs(tail=LOG_TAIL_LINES, stdout=True, stderr=True)
        except ENGINE_ERRORS:
            return ""
        text = raw.decode("utf-8", errors="replace").strip() if isinstance(raw, bytes) else ""
        return text[-1500:]

    @staticmethod
    def _remove(container: Any, stop_timeout: int) -> None:
        try:
            container.reload()
            if _is_running(container):
                container.stop(timeout=stop_timeout)
            container.remove(force=True)
        except NotFound:
            pass

    # -- health ---------------------------------------------------------------------

    async def _healthy(
        self,
        container: Any,
        spec: ServiceSpec,
        version: str | None,
        *,
        within: float,
        url_within: float | None = None,
        log: LogLine | None = None,
    ) -> tuple[bool, str]:
        """Wait up to ``within`` s until ``container`` runs healthy: Docker's health status
        when the image has a health check, the health URL when the spec has one (both
        when both). Returns (healthy, detail)."""
        started = time.monotonic()
        deadline = started + within
        while True:
            await self._call(self._refresh, container)
            state = container.attrs.get("State", {})
            if not state.get("Running"):
                return False, (
                    f"container is {state.get('Status', 'gone')} "
                    f"(exit code {state.get('ExitCode')})"
                )
            status = _health_status(container)
            if status is None or status == "healthy":
                break
            if status == "unhealthy":
                return False, f"Docker health check unhealthy ({_health_output(container)})"
            if time.monotonic() >= deadline:
                return False, f"Docker health status still {status!r} after {within:g} s"
            await asyncio.sleep(0.25)
        details = [f"Docker health: {status}"] if status else []
        if spec.health_url:
            remaining = max(0.0, deadline - time.monotonic())
            if url_within is not None:
                remaining = min(remaining, url_within)
            result = await wait_healthy(
                spec.health_url, version=version, timeout=remaining, log=log
            )
            if not result.healthy:
                return False, result.detail
            if version is not None and result.version not in (None, version):
                return False, f"{result.detail}, but it reports version {result.version!r}"
            details.append(result.detail)
        elif status is None and within > 0:
            # Nothing to ask: it must at least keep running for a moment.
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            await self._call(self._refresh, container)
            if not _is_running(container):
                state = container.attrs.get("State", {})
                return False, f"container exited (exit code {state.get('ExitCode')})"
            details.append("running (no health check, no health URL)")
        return True, "; ".join(details) or "running"

    # -- for step actions that look at a service's containers -----------------------

    async def containers(self, spec: ServiceSpec) -> list[Any]:
        """Every container of the service on this engine (running or not, the one
        under its name first): those carrying its labels, and its name if it is its."""
        config = self._config(spec)
        name = self.container_name(spec, config)
        async with self._connect(config) as client:
            found = {
                c.id: c for c in await self._call(self._labelled, client, spec, running_only=False)
            }
            named = await self._call(self._get, client, name)
        if named is not None and _owned(named, spec):
            found[named.id] = named
        return sorted(found.values(), key=lambda c: (c.name != name, not _is_running(c), c.name))

    async def wait_until_healthy(
        self, container: Any, spec: ServiceSpec, within: float
    ) -> tuple[bool, str]:
        """Wait up to ``within`` s until ``container`` runs healthy (Docker's health
        check and the service's health URL, when it has them); (healthy, detail)."""
        try:
            return await self._healthy(container, spec, None, within=within)
        except ENGINE_ERRORS as exc:
            return False, f"Docker engine error: {_explain(exc)}"

    # -- the driver interface -------------------------------------------------------

    async def pull(self, spec: ServiceSpec, version: str, log: LogLine) -> str:
        config = self._config(spec)
        _check_version(version)
        ref = f"{config.image}:{version}"
        await log(f"pulling {ref}")
        async with self._connect(config) as client:
            try:
                image = await self._call(client.images.pull, config.image, tag=version)
            except ENGINE_ERRORS as exc:
                raise DriverError(f"pull of {ref} failed: {_explain(exc)}") from None
        output = f"pulled {ref} ({image.short_id})"
        await log(output)
        return output

    async def current(self, spec: ServiceSpec) -> Deployed | None:
        config = self._config(spec)
        name = self.container_name(spec, config)
        async with self._connect(config) as client:
            container = await self._call(
                self._service_container, client, spec, name, running_only=True
            )
        if container is None:
            return None
        return Deployed(
            _version_of(container) or "unknown",
            str(container.id),
            {
                "container_name": container.name,
                "image": _image_of(container),
                "status": container.attrs.get("State", {}).get("Status"),
                "health": _health_status(container),
            },
        )

    async def health(self, spec: ServiceSpec) -> HealthResult:
        config = self._config(spec)
        name = self.container_name(spec, config)
        async with self._connect(config) as client:
            container = await self._call(
                self._service_container, client, spec, name, running_only=True
            )
        if container is None:
            return HealthResult(False, detail=f"no running container for {name}")
        status = _health_status(container)
        docker_ok = status in (None, "healthy")
        docker_detail = f"Docker health: {status}" if status else "running"
        if status == "unhealthy":
            docker_detail += f" ({_health_output(container)})"
        if not spec.health_url:
            return HealthResult(docker_ok, _version_of(container), detail=docker_detail)
        result = await probe(spec.health_url)
        return HealthResult(
            result.healthy and docker_ok,
            result.version,
            result.status_code,
            result.latency_ms,
            f"{result.detail}; {docker_detail}",
        )

    async def stop(self, spec: ServiceSpec, log: LogLine) -> None:
        config = self._config(spec)
        name = self.container_name(spec, config)
        async with self._connect(config) as client:
            found: dict[str, Any] = {}
            for container in await self._call(self._labelled, client, spec, running_only=False):
                found[container.id] = container
            for candidate in (name, name + PREVIOUS_SUFFIX):
                container = await self._call(self._get, client, candidate)
                if container is None or container.id in found:
                    continue
                if _owned(container, spec):
                    found[container.id] = container
                else:
                    await log(_foreign(container, spec))
            if not found:
                await log(f"no container of {spec.environment}/{spec.name}")
                return
            for container in found.values():
                await self._call(self._remove, container, config.stop_timeout_seconds)
                await log(f"stopped and removed {container.name} ({_version_of(container)})")

    async def deploy(self, spec: ServiceSpec, version: str, log: LogLine) -> DeployResult:
        config = self._config(spec)
        _check_version(version)
        name = self.container_name(spec, config)
        ref = f"{config.image}:{version}"
        progress = _Progress(log)
        async with self._connect(config) as client:
            await self._call(self._check_names, client, spec, name)
            recovered = await self._recover(client, spec, config, name, progress)
            old = await self._call(self._service_container, client, spec, name, running_only=False)
            previous_version = _version_of(old) if old is not None else None
            if (
                old is not None
                and _is_running(old)
                and previous_version == version
                and _image_of(old) == ref
            ):
                healthy, detail = await self._healthy(
                    old,
                    spec,
                    version,
                    within=spec.health_timeout_seconds,
                    url_within=EXISTING_HEALTH_TIMEOUT,
                )
                if healthy:
                    await progress(f"{old.name} already runs {version} healthy ({detail})")
                    return DeployResult(
                        version,
                        previous_version,
                        changed=recovered,
                        output=progress.text,
                        details=_details(old, ref),
                    )
                await progress(f"{old.name} runs {version} but is not healthy ({detail})")
            await self._ensure_image(client, config, version, progress)
            new = await self._replace(client, spec, config, name, ref, version, old, progress)
            return DeployResult(
                version,
                previous_version,
                changed=True,
                output=progress.text,
                details=_details(new, ref),
            )

    # -- deploy steps ---------------------------------------------------------------

    async def _ensure_image(
        self, client: Any, config: DockerConfig, version: str, progress: _Progress
    ) -> None:
        ref = f"{config.image}:{version}"
        try:
            await self._call(client.images.get, ref)
            return
        except ImageNotFound:
            pass
        await progress(f"pulling {ref}")
        try:
            await self._call(client.images.pull, config.image, tag=version)
        except ENGINE_ERRORS as exc:
            raise DriverError(f"pull of {ref} failed: {_explain(exc)}") from None

    async def _recover(
        self,
        client: Any,
        spec: ServiceSpec,
        config: DockerConfig,
        name: str,
        progress: _Progress,
    ) -> bool:
        """Finish or undo a deploy that was interrupted (a ``<name>-previous`` is left)."""
        previous_name = name + PREVIOUS_SUFFIX
        previous = await self._call(self._get, client, previous_name)
        if previous is None:
            return False
        current = await self._call(self._get, client, name)
        if current is not None and _is_running(current):
            healthy, detail = await self._healthy(current, spec, _version_of(current), within=0.0)
            if healthy:
                await self._call(self._remove, previous, config.stop_timeout_seconds)
                await progress(
                    f"interrupted deploy: {name} runs {_version_of(current)} healthy; "
                    f"removed {previous_name} ({_version_of(previous)})"
                )
                return True
            await progress(f"interrupted deploy: {name} is not healthy ({detail})")
        if current is not None:
            await self._call(current.remove, force=True)
        await self._call(previous.rename, name)
        await self._call(self._refresh, previous)
        if not _is_running(previous):
            await self._call(previous.start)
        await progress(f"interrupted deploy: restored {name} ({_version_of(previous)})")
        return True

    def _run_settings(
        self,
        client: Any,
        spec: ServiceSpec,
        config: DockerConfig,
        version: str,
        old: Any | None,
    ) -> dict[str, Any]:
        """``containers.create`` arguments: the old container's settings, then the config.
        Mounts come from the config only; a network mode that shares a namespace is
        carried over only when the settings allow it."""
        env: dict[str, str] = {}
        labels: dict[str, str] = {}
        ports: dict[str, Any] = {}
        networks: list[str] = []
        network_mode: str | None = None
        restart: dict[str, Any] = {"Name": config.restart_policy}
        if old is not None:
            attrs = old.attrs
            image_config: dict[str, Any] = {}
            with suppress(ImageNotFound):
                image_config = client.images.get(attrs["Image"]).attrs.get("Config") or {}
            image_env = set(image_config.get("Env") or [])
            env = _env_dict([e for e in attrs["Config"].get("Env") or [] if e not in image_env])
            image_labels = image_config.get("Labels") or {}
            labels = {
                key: value
                for key, value in _labels_of(old).items()
                if not key.startswith(LABEL_PREFIX) and image_labels.get(key) != value
            }
            host_config = attrs.get("HostConfig") or {}
            ports = _port_bindings(host_config.get("PortBindings") or {})
            mode = str(host_config.get("NetworkMode") or "")
            if mode == "none" or shares_namespace(mode):
                network_mode = mode
            else:
                attached = list((attrs.get("NetworkSettings") or {}).get("Networks") or {})
                if mode and mode not in ("default", "bridge"):
                    networks.append(mode)
                networks += [n for n in attached if n not in networks and n != "bridge"]
            old_restart = host_config.get("RestartPolicy") or {}
            if old_restart.get("Name") == config.restart_policy == "on-failure":
                restart["MaximumRetryCount"] = int(old_restart.get("MaximumRetryCount") or 0)
            _check_mounts_declared(old, config)
        env.update(config.env)
        labels.update(config.labels)
        labels.update(
            {LABEL_ENVIRONMENT: spec.environment, LABEL_SERVICE: spec.name, LABEL_VERSION: version}
        )
        ports.update(config.ports)
        if config.network and (config.network == "none" or shares_namespace(config.network)):
            network_mode, networks = config.network, []
        elif config.network:
            network_mode = None
            networks = [config.network] + [n for n in networks if n != config.network]
        if (
            network_mode is not None
            and shares_namespace(network_mode)
            and not self.settings.docker.allow_host_network
        ):
            raise DriverError(
                f"{getattr(old, 'name', 'the old container')} runs with network mode "
                f"{network_mode!r}; a new container does not share it without "
                f"{HOST_NETWORK_SETTING}=true. Set config.network to the network to use instead"
            )
        settings: dict[str, Any] = {
            "environment": env,
            "labels": labels,
            "restart_policy": restart,
            "mounts": [
                Mount(
                    target=target, source=mount.source, type=mount.type, read_only=mount.read_only
                )
                for target, mount in config.mounts.items()
            ],
        }
        if ports:
            settings["ports"] = ports
        if config.command is not None:
            settings["command"] = config.command
        if network_mode is not None:
            settings["network_mode"] = network_mode
        elif networks:
            settings["network"] = networks[0]
            settings["_extra_networks"] = networks[1:]
        return settings

    @staticmethod
    def _create(client: Any, ref: str, name: str, settings: dict[str, Any]) -> Any:
        settings = dict(settings)
        extra_networks = settings.pop("_extra_networks", [])
        container = client.containers.create(ref, name=name, **settings)
        for network in extra_networks:
            client.networks.get(network).connect(container)
        return container

    async def _replace(
        self,
        client: Any,
        spec: ServiceSpec,
        config: DockerConfig,
        name: str,
        ref: str,
        version: str,
        old: Any | None,
        progress: _Progress,
    ) -> Any:
        settings = await self._call(self._run_settings, client, spec, config, version, old)
        old_name = old.name if old is not None else None
        old_was_running = old is not None and _is_running(old)
        old_version = _version_of(old) if old is not None else None
        if old is not None:
            await self._call(old.rename, name + PREVIOUS_SUFFIX)
            # Published ports, or the host's own: a port cannot be bound twice.
            frees_ports = bool(settings.get("ports")) or settings.get("network_mode") == "host"
            if frees_ports and old_was_running:
                await progress(f"stopping {old_name} ({old_version}) to free its ports")
                await self._call(old.stop, timeout=config.stop_timeout_seconds)
        new: Any = None
        failure: DriverError
        try:
            new = await self._call(self._create, client, ref, name, settings)
            await self._call(new.start)
            await progress(f"started {name} ({version}), waiting until healthy")
            healthy, detail = await self._healthy(
                new, spec, version, within=spec.health_timeout_seconds, log=progress
            )
            if healthy:
                await progress(f"{name} ({version}) is healthy: {detail}")
                await self._retire(old, old_version, config, progress)
                return new
            tail = await self._call(self._log_tail, new)
            message = f"{name} ({version}) did not become healthy: {detail}"
            if tail:
                message += f"; last log lines: {tail}"
            failure = UnhealthyError(message)
        except ENGINE_ERRORS as exc:
            failure = DriverError(f"starting {name} ({version}) failed: {_explain(exc)}")
        await progress(str(failure))
        await self._rollback(spec, config, name, new, old, old_name, old_was_running, progress)
        raise failure

    async def _retire(
        self, old: Any | None, old_version: str | None, config: DockerConfig, progress: _Progress
    ) -> None:
        """Remove the replaced container (its image stays, for a rollback)."""
        if old is None:
            return
        try:
            await self._call(self._remove, old, config.stop_timeout_seconds)
        except ENGINE_ERRORS as exc:
            # The new version runs healthy; the next deploy removes the leftover.
            await progress(f"could not remove the old container ({old_version}): {_explain(exc)}")
            return
        await progress(f"removed the old container ({old_version}); its image is kept")

    async def _rollback(
        self,
        spec: ServiceSpec,
        config: DockerConfig,
        name: str,
        new: Any | None,
        old: Any | None,
        old_name: str | None,
        old_was_running: bool,
        progress: _Progress,
    ) -> None:
        try:
            if new is not None:
                await self._call(new.remove, force=True)
                await progress(f"removed the new container {name}")
            if old is None or old_name is None:
                return
            await self._call(old.rename, old_name)
            await self._call(self._refresh, old)
            if old_was_running and not _is_running(old):
                await self._call(old.start)
            version = _version_of(old)
            if old_was_running:
                healthy, detail = await self._healthy(
                    old, spec, version, within=spec.health_timeout_seconds
                )
                state = "healthy" if healthy else f"not healthy: {detail}"
                await progress(f"rolled back: {old_name} runs {version} again ({state})")
            else:
                await progress(f"rolled back: {old_name} ({version}) restored, not running")
        except ENGINE_ERRORS as exc:
            # The next deploy finishes the job (it finds <name>-previous).
            raise DriverError(
                f"rollback of {name} failed: {_explain(exc)}; deploy again to recover"
            ) from None


_ANONYMOUS_VOLUME = re.compile(r"^[0-9a-f]{64}$")


def _check_mounts_declared(old: Any, config: DockerConfig) -> None:
    """Refuse to replace ``old`` when it has a named volume or a bind mount that the
    config does not declare: the new container would silently lose its data."""
    declared = set(config.mounts)
    missing = []
    for mount in old.attrs.get("Mounts") or []:
        target = str(mount.get("Destination") or "")
        kind = str(mount.get("Type") or "")
        if target in declared or kind not in ("volume", "bind"):
            continue
        if kind == "volume":
            name = str(mount.get("Name") or "")
            if _ANONYMOUS_VOLUME.match(name):
                continue  # the image's own VOLUME: each container gets a fresh one
            missing.append(f"{target} (volume {name})")
        else:
            missing.append(f"{target} (bind {mount.get('Source')})")
    if missing:
        raise DriverError(
            f"{old.name} has mounts that the config does not declare: {', '.join(missing)}; "
            "a new container would lose them. Declare them in config.mounts"
        )


def _check_version(version: str) -> None:
    if not _TAG.match(version):
        raise DriverError(f"version {version!r} is not a valid image tag")


def _details(container: Any, ref: str) -> dict[str, Any]:
    return {"container_id": str(container.id), "container_name": container.name, "image": ref}
