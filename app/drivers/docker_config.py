"""The ``config`` of a service run by the ``docker`` driver (:class:`DockerConfig`) and
what the server's settings allow of it (:func:`policy_problems`).

This module does not import the docker SDK: the API validates service configs with it,
and only a worker running a docker step loads :mod:`app.drivers.docker`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from app.core.schemas import CONTROL, MULTILINE, MULTILINE_NOTE, PRINTABLE
from app.core.settings import DockerSettings
from app.drivers.base import DriverSettings, Problem

LABEL_ENVIRONMENT = "formula-ops.environment"
LABEL_SERVICE = "formula-ops.service"
LABEL_VERSION = "formula-ops.version"
LABEL_PREFIX = "formula-ops."
PREVIOUS_SUFFIX = "-previous"

CONTAINER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Constraints a JSON schema can state too, so the API's documented schema and this
# model accept the same configs.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = (
    r"(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|[A-Za-z0-9.-]+:[0-9]{1,5})(?::[0-9]{1,5})?"
)
IMAGE_PATTERN = rf"^(?:{_REGISTRY}/)?{_COMPONENT}(?:/{_COMPONENT})*$"
PORT_NUMBER = (
    r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
ContainerPort = Annotated[str, StringConstraints(pattern=rf"^{PORT_NUMBER}(?:/(?:tcp|udp|sctp))?$")]
EnvName = Annotated[str, StringConstraints(pattern=rf"^[^={CONTROL}]+$", max_length=128)]
NoNul = Annotated[str, StringConstraints(pattern=MULTILINE, max_length=1024)]
# ``host``, ``none``, ``bridge``, a network's name, or ``container:<name or id>``.
NETWORK_PATTERN = r"^(?:container:)?[A-Za-z0-9][A-Za-z0-9_.-]*$"
# An absolute, normalised path: no empty, ``.`` or ``..`` component, no trailing slash
# (the same constraint in the API's schema and here, so both accept the same configs).
_PATH_COMPONENT = (
    rf"(?:[^/.{CONTROL}][^/{CONTROL}]*"
    rf"|\.[^/.{CONTROL}][^/{CONTROL}]*"
    rf"|\.\.[^/{CONTROL}]+)"
)
PATH_PATTERN = rf"^(?:/|(?:/{_PATH_COMPONENT})+)$"
TARGET_PATTERN = rf"^(?:/{_PATH_COMPONENT})+$"
HOST_NETWORK_SETTING = "FORMULA_OPS_DOCKER__ALLOW_HOST_NETWORK"
SENSITIVE_BINDS_SETTING = "FORMULA_OPS_DOCKER__ALLOW_SENSITIVE_BINDS"

# What needs a setting of the server: a network mode that shares a namespace, and bind
# mounts of the host's root, of a Docker socket or of a directory holding a usual one.
SHARED_NETWORK_PATTERN = r"^(?:host|container:.*)$"
DOCKER_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock", "/run/containerd/containerd.sock")
_SOCKET_DIRS = sorted(
    {"/"} | {socket.rsplit("/", n)[0] or "/" for socket in DOCKER_SOCKETS for n in range(1, 4)}
)
SENSITIVE_BIND_PATTERN = (
    "^(?:"
    + "|".join(re.escape(path) for path in _SOCKET_DIRS)
    + r"|.*/(?:docker|containerd)\.sock)$"
)


def _readable_path(value: Any, *, what: str) -> Any:
    """Readable messages for the common mistakes, before the patterns apply."""
    if not isinstance(value, str):
        return value
    if not value.startswith("/"):
        raise ValueError(f"{what} {value!r} is not an absolute path")
    parts = value.split("/")[1:]
    if value != "/" and any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"{what} {value!r} is not a normalised path (no '.', '..', '//' or trailing '/')"
        )
    return value


class _MountFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    read_only: bool = False


class VolumeMount(_MountFields):
    """A named volume of the engine (created on first use; kept across deploys)."""

    type: Literal["volume"]
    source: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]+$", max_length=255, description="Volume name."
    )


class BindMount(_MountFields):
    """A directory or file of the engine's host."""

    type: Literal["bind"]
    source: str = Field(
        pattern=PATH_PATTERN,
        max_length=1024,
        description="Absolute path on the engine's host. `/`, a Docker socket and the "
        f"directories holding one only when the server allows them ({SENSITIVE_BINDS_SETTING}).",
        json_schema_extra={"not": {"pattern": SENSITIVE_BIND_PATTERN}},
    )

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> Any:
        return _readable_path(value, what="source")


DeclaredMount = Annotated[VolumeMount | BindMount, Field(discriminator="type")]
MountTarget = Annotated[str, StringConstraints(pattern=TARGET_PATTERN, max_length=1024)]


class DockerConfig(BaseModel):
    """The ``config`` of a service run by the docker driver."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        pattern=IMAGE_PATTERN,
        max_length=255,
        description="Repository without tag or digest: the version to deploy is the tag.",
    )
    container_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128
    )
    env: dict[EnvName, NoNul] = Field(default={}, max_length=50, description=MULTILINE_NOTE)
    ports: dict[ContainerPort, Annotated[int, Field(ge=1, le=65535)]] = Field(
        default={}, max_length=50, description='Container port ("8080/tcp") to host port.'
    )
    network: str | None = Field(
        default=None,
        pattern=NETWORK_PATTERN,
        max_length=255,
        description="A network's name; `host` and `container:<name>` only when the "
        f"server allows them ({HOST_NETWORK_SETTING}).",
        json_schema_extra={"not": {"pattern": SHARED_NETWORK_PATTERN}},
    )
    mounts: dict[MountTarget, DeclaredMount] = Field(
        default={},
        max_length=20,
        description="Absolute path in the container to the named volume or bind mount "
        "there, for every container of the service.",
    )
    restart_policy: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    labels: dict[
        Annotated[
            str,
            StringConstraints(min_length=1, pattern=PRINTABLE, max_length=128),
            # The reserved prefix of `_labels`, stated in the schema.
            Field(json_schema_extra={"not": {"pattern": f"^{LABEL_PREFIX.replace('.', '[.]')}"}}),
        ],
        NoNul,
    ] = Field(default={}, max_length=50, description=MULTILINE_NOTE)
    command: list[NoNul] | None = Field(
        default=None, min_length=1, max_length=50, description=MULTILINE_NOTE
    )
    docker_host: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        pattern=PRINTABLE,
        description="The Docker engine the service runs on: the `name` of one of its "
        "environment's `docker_hosts` (its URL and TLS material are used), or a URL "
        "(`unix:///path`, `tcp://host:port`, `ssh://user@host`). None: the control "
        "plane's local engine (`DOCKER_HOST` or the default socket).",
    )
    stop_timeout_seconds: int = Field(default=10, ge=0, le=3600)

    # Readable messages for the common mistakes, before the patterns above apply.
    @field_validator("image", mode="before")
    @classmethod
    def _image(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if "@" in value:
            raise ValueError(
                f"image {value!r} contains a digest; give the repository only "
                "(the version to deploy is the tag)"
            )
        if ":" in value.split("/")[-1]:
            raise ValueError(
                f"image {value!r} contains a tag; give the repository only "
                "(the version to deploy is the tag)"
            )
        if not re.fullmatch(IMAGE_PATTERN, value):
            raise ValueError(
                f"image {value!r}: invalid repository name (lowercase letters, digits and "
                "separators . _ -, after an optional registry host)"
            )
        return value

    @field_validator("container_name", mode="before")
    @classmethod
    def _container_name(cls, value: Any) -> Any:
        if isinstance(value, str) and not CONTAINER_NAME.match(value):
            raise ValueError(
                f"container_name {value!r} is not a valid container name "
                "(letters, digits, _ . -; starting with a letter or digit)"
            )
        return value

    @field_validator("ports", mode="before")
    @classmethod
    def _port_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str) or not re.fullmatch(
                    rf"{PORT_NUMBER}(?:/(?:tcp|udp|sctp))?", key
                ):
                    raise ValueError(f"ports: {key!r} is not a container port like '8080/tcp'")
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: dict[str, int]) -> dict[str, int]:
        normalised: dict[str, int] = {}
        for key, host_port in value.items():
            number, _, protocol = key.partition("/")
            normalised[f"{int(number)}/{protocol or 'tcp'}"] = host_port
        return normalised

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key:
                raise ValueError("labels: empty label name")
            if key.startswith(LABEL_PREFIX):
                raise ValueError(f"labels: {key!r} is reserved (labels {LABEL_PREFIX}* are set)")
        return value

    @field_validator("mounts", mode="before")
    @classmethod
    def _mount_targets(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for target in value:
                _readable_path(target, what="mounts: target")
                if target == "/":
                    raise ValueError("mounts: target '/' would hide the container's files")
        return value


def shares_namespace(network: str) -> bool:
    """Whether a network (mode) shares the host's or another container's namespace."""
    return re.fullmatch(SHARED_NETWORK_PATTERN, network) is not None


def _exposes(source: str, path: str) -> bool:
    return path == source or path.startswith(source.rstrip("/") + "/")


def policy_problems(
    config: DockerConfig, policy: DockerSettings, *, engine_socket: str | None = None
) -> list[Problem]:
    """What ``config`` asks for that ``policy`` does not allow: (location, message)."""
    problems: list[Problem] = []
    if config.network and shares_namespace(config.network) and not policy.allow_host_network:
        problems.append(
            (
                ("network",),
                f"network {config.network!r} shares a network namespace; "
                f"the server allows it only with {HOST_NETWORK_SETTING}=true",
            )
        )
    if not policy.allow_sensitive_binds:
        for target, mount in config.mounts.items():
            if mount.type != "bind":
                continue
            source = mount.source
            if re.fullmatch(SENSITIVE_BIND_PATTERN, source) or (
                engine_socket and _exposes(source, engine_socket)
            ):
                problems.append(
                    (
                        ("mounts", target, "source"),
                        f"bind mount of {source!r} exposes the host's root or a Docker "
                        f"socket; the server allows it only with {SENSITIVE_BINDS_SETTING}=true",
                    )
                )
    return problems


def settings_problems(config: DockerConfig, settings: DriverSettings) -> list[Problem]:
    """:func:`policy_problems` under the server's docker settings (the driver type's
    ``policy``)."""
    return policy_problems(config, settings.docker)


def connection(config: Mapping[str, Any]) -> DockerEngine | None:
    """The Docker engine a service's config talks to (None: ``DOCKER_HOST`` or the
    default socket); one driver instance is kept per engine. A config naming an
    environment's docker host is resolved above the drivers
    (:func:`app.environments.engines.driver_for`), which gives the pool the engine."""
    host = config.get("docker_host")
    return DockerEngine(host) if isinstance(host, str) and host else None


def readable(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "config"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "invalid docker config: " + "; ".join(problems)


def refused(problems: list[tuple[tuple[str | int, ...], str]]) -> str:
    text = "; ".join(".".join(str(part) for part in loc) + f": {msg}" for loc, msg in problems)
    return "docker config refused: " + text


def engine_socket(config: DockerConfig) -> str | None:
    """The path of the engine's unix socket the driver talks to, when it is one."""
    host = config.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return None
    return "/" + "/".join(part for part in host.removeprefix("unix://").split("/") if part)


# -- the Docker engines of an environment ------------------------------------------------

HOST_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
_PORT = rf"(?::{PORT_NUMBER})"
# No password in an ssh URL: ssh authenticates with the worker's keys (its agent or
# ~/.ssh). A unix socket's path is absolute.
DOCKER_URL = (
    rf"^(?:tcp://{_HOST}{_PORT}"
    rf"|ssh://(?:[A-Za-z0-9._][A-Za-z0-9._-]{{0,63}}@)?{_HOST}{_PORT}?"
    rf"|unix:///[^{CONTROL} ]{{1,500}})$"
)
_PEM_SPACE = r"[\n\t ]*"
PEM_CERTIFICATES = (
    rf"^{_PEM_SPACE}-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\n\t -]+"
    rf"-----END CERTIFICATE-----{_PEM_SPACE}$"
)
PEM_PRIVATE_KEY = (
    rf"^{_PEM_SPACE}-----BEGIN [A-Z ]{{0,20}}PRIVATE KEY-----[A-Za-z0-9+/=\n\t :,-]+"
    rf"-----END [A-Z ]{{0,20}}PRIVATE KEY-----{_PEM_SPACE}$"
)
# A tcp:// engine on this machine's loopback interface (plain TCP is allowed there: an
# ssh tunnel's forwarded port); stated as patterns, so the API's schema says it too.
LOOPBACK_TCP = r"^tcp://(?:127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|localhost|\[::1\]):"
_TLS_RULES: JsonDict = {
    "anyOf": [
        {"properties": {"url": {"pattern": "^(?:ssh|unix)://"}, "tls": {"type": "null"}}},
        {"properties": {"url": {"pattern": LOOPBACK_TCP}}},
        {
            "properties": {
                "url": {"pattern": "^tcp://"},
                "tls": {"$ref": "#/components/schemas/DockerTLS"},
            },
            "required": ["tls"],
        },
    ]
}


class DockerTLS(BaseModel):
    """Mutual TLS with a ``tcp://`` engine (dockerd ``--tlsverify``): PEM texts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_cert: str = Field(
        max_length=65536,
        pattern=PEM_CERTIFICATES,
        description="The CA certificate(s) the engine's certificate must chain to (the "
        "machine's trust store is not used). PEM text: newline-separated lines (LF).",
    )
    client_cert: str = Field(
        max_length=65536,
        pattern=PEM_CERTIFICATES,
        description="The client certificate presented to the engine. PEM text: "
        "newline-separated lines (LF).",
    )
    client_key: str = Field(
        max_length=16384,
        repr=False,
        pattern=PEM_PRIVATE_KEY,
        description="The client certificate's private key (unencrypted PEM, newline-separated "
        "lines, LF). A secret: shown to admins only, never in audit records, step output or "
        "logs.",
    )


class DockerHost(BaseModel):
    """A Docker engine an environment's services run on, named for their configs."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_TLS_RULES)

    name: str = Field(
        max_length=63,
        pattern=HOST_NAME,
        description="What a docker service's `config.docker_host` names.",
    )
    url: str = Field(
        max_length=1000,
        pattern=DOCKER_URL,
        description="`ssh://user@host[:port]` (the worker's ssh client and keys), "
        "`tcp://host:port` (with `tls`; plain TCP only to a loopback address, e.g. a "
        "forwarded port) or `unix:///path/to/docker.sock`. Userinfo is shown to admins only.",
    )
    tls: DockerTLS | None = Field(
        default=None,
        description="Required for `tcp://` (unless to a loopback address); tcp:// only.",
    )

    @model_validator(mode="after")
    def _tls_where_it_belongs(self) -> DockerHost:
        scheme = self.url.split("://", 1)[0]
        if scheme != "tcp" and self.tls is not None:
            raise ValueError(f"docker host {self.name!r}: tls applies to tcp:// URLs only")
        if scheme == "tcp" and self.tls is None and not re.match(LOOPBACK_TCP, self.url):
            raise ValueError(
                f"docker host {self.name!r}: a tcp:// engine off this machine needs tls "
                "(ca_cert, client_cert, client_key); an unprotected engine API is root on its host"
            )
        return self

    def engine(self) -> DockerEngine:
        return DockerEngine(self.url, self.tls)


@dataclass(frozen=True)
class DockerEngine:
    """How to reach one Docker engine: its URL (None: ``DOCKER_HOST`` or the default
    socket) and, for ``tcp://`` with TLS, the client's identity and CA. The driver pool
    keeps one driver (and one client) per distinct engine."""

    url: str | None
    tls: DockerTLS | None = None

    def __repr__(self) -> str:  # never the key material
        return f"DockerEngine({self.url!r}, tls={self.tls is not None})"


def host_name(config: Mapping[str, Any]) -> str | None:
    """The environment docker host a service config names (``docker_host`` without a
    scheme), or None when it gives a URL or nothing."""
    host = config.get("docker_host")
    if isinstance(host, str) and "://" not in host and re.fullmatch(HOST_NAME, host):
        return host
    return None
