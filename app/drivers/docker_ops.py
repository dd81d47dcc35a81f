"""What the ``docker`` step action reads of, and does to, a service's containers and
an engine's images, through an engine's (shared) docker SDK client. Synchronous: the
caller runs each function in a thread.

Everything returned is JSON data meant for a step's output: bounded, and without a
container's environment values (they may hold secrets): ``Config.Env`` keeps the names.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from app.core.redaction import REDACTED, redact_value
from app.drivers.docker_config import LABEL_VERSION

LOG_LINE_CHARS = 1000  # of a log line: shown and matched
LOG_SCAN_LINES = 5000  # read from the engine when filtering with ``grep``
LOG_DATA_CHARS = 48 * 1024  # of all the log lines a step keeps
MAX_IMAGES_LISTED = 50


def short_id(value: Any) -> str:
    return str(value or "").removeprefix("sha256:")[:12]


def _state(container: Any) -> dict[str, Any]:
    state: dict[str, Any] = container.attrs.get("State") or {}
    return state


def health_of(container: Any) -> str | None:
    """Docker's health status, None when the container has no health check."""
    health = _state(container).get("Health")
    return str(health.get("Status") or "starting") if health else None


def summary_of(container: Any) -> dict[str, Any]:
    """What ``docker ps`` shows of a container, and its version label."""
    state = _state(container)
    labels = (container.attrs.get("Config") or {}).get("Labels") or {}
    return {
        "name": container.name,
        "id": short_id(container.id),
        "image": str((container.attrs.get("Config") or {}).get("Image") or ""),
        "version": labels.get(LABEL_VERSION),
        "status": state.get("Status"),
        "running": bool(state.get("Running")),
        "health": health_of(container),
        "exit_code": state.get("ExitCode"),
        "started_at": state.get("StartedAt"),
        "restart_count": container.attrs.get("RestartCount"),
    }


# -- logs -------------------------------------------------------------------------------

# A group that is repeated and holds a repetition itself, e.g. ``(a+)+`` or ``(\w*x)*``:
# the shape of a pattern that backtracks exponentially. Refused (re has no time limit).
_NESTED_REPEAT = re.compile(r"\((?:[^()\\]|\\.)*(?:[*+]|\{\d*,?\d*\})(?:[^()\\]|\\.)*\)(?:[*+]|\{)")


def line_filter(grep: str | None, *, regex: bool) -> re.Pattern[str] | None:
    """The compiled filter of ``grep``: a plain substring (escaped), or a regular
    expression without nested repetition. Raises ValueError for a bad pattern."""
    if grep is None:
        return None
    if not regex:
        return re.compile(re.escape(grep))
    if _NESTED_REPEAT.search(grep):
        raise ValueError("grep: a repeated group holding a repetition (like '(a+)+') is refused")
    try:
        return re.compile(grep)
    except re.error as exc:
        raise ValueError(f"grep: invalid regular expression: {exc}") from None


def log_lines(
    container: Any,
    *,
    tail: int,
    since: dt.datetime | None,
    until: dt.datetime | None,
    pattern: re.Pattern[str] | None,
) -> tuple[list[str], int]:
    """The container's last ``tail`` log lines (stdout and stderr, with timestamps) in
    the window, matching ``pattern`` when given (among the last
    :data:`LOG_SCAN_LINES`); each cut to :data:`LOG_LINE_CHARS`. Returns (lines,
    lines scanned)."""
    options: dict[str, Any] = {"stdout": True, "stderr": True, "timestamps": True}
    options["tail"] = LOG_SCAN_LINES if pattern is not None else tail
    if since is not None:
        options["since"] = since
    if until is not None:
        options["until"] = until
    raw = container.logs(**options)
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    lines = [line[:LOG_LINE_CHARS] for line in text.splitlines()]
    scanned = len(lines)
    if pattern is not None:
        lines = [line for line in lines if pattern.search(line)]
    return lines[-tail:], scanned


def bounded_lines(lines: list[str], limit: int = LOG_DATA_CHARS) -> tuple[list[str], bool]:
    """The last lines that fit in ``limit`` characters; whether some were left out."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        size += len(line) + 1
        if size > limit:
            return kept[::-1], True
        kept.append(line)
    return kept[::-1], False


# -- inspect ----------------------------------------------------------------------------


def _env_names(entries: Iterable[str]) -> list[str]:
    return [f"{entry.partition('=')[0]}={REDACTED}" for entry in entries]


def inspect_view(container: Any) -> dict[str, Any]:
    """What ``docker inspect`` says that an operator needs, without environment values
    (names only) and with every other secret-looking value redacted."""
    attrs = container.attrs
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    view = {
        "id": str(container.id),
        "name": container.name,
        "created": attrs.get("Created"),
        "image_id": attrs.get("Image"),
        "state": {
            key: value
            for key, value in _state(container).items()
            if key in ("Status", "Running", "Paused", "Restarting", "OOMKilled", "Dead")
            or key in ("Pid", "ExitCode", "Error", "StartedAt", "FinishedAt")
        },
        "health": _health_log(container),
        "restart_count": attrs.get("RestartCount"),
        "config": {
            "image": config.get("Image"),
            "cmd": config.get("Cmd"),
            "entrypoint": config.get("Entrypoint"),
            "env": _env_names(config.get("Env") or []),
            "labels": config.get("Labels") or {},
            "exposed_ports": sorted(config.get("ExposedPorts") or {}),
            "healthcheck": config.get("Healthcheck"),
            "user": config.get("User"),
            "working_dir": config.get("WorkingDir"),
        },
        "host_config": {
            "restart_policy": host.get("RestartPolicy"),
            "port_bindings": host.get("PortBindings"),
            "network_mode": host.get("NetworkMode"),
            "memory": host.get("Memory"),
            "nano_cpus": host.get("NanoCpus"),
            "privileged": host.get("Privileged"),
        },
        "mounts": [
            {
                "type": m.get("Type"),
                "source": m.get("Name") or m.get("Source"),
                "destination": m.get("Destination"),
                "rw": m.get("RW"),
            }
            for m in attrs.get("Mounts") or []
        ],
        "networks": {
            name: {"ip_address": net.get("IPAddress"), "aliases": net.get("Aliases")}
            for name, net in networks.items()
        },
    }
    redacted: dict[str, Any] = redact_value(view)
    return redacted


def _health_log(container: Any) -> dict[str, Any] | None:
    health = _state(container).get("Health")
    if not health:
        return None
    return {
        "status": health.get("Status"),
        "failing_streak": health.get("FailingStreak"),
        "last": [
            {
                "exit_code": entry.get("ExitCode"),
                "output": str(entry.get("Output") or "")[:300],
                "end": entry.get("End"),
            }
            for entry in (health.get("Log") or [])[-3:]
        ],
    }


# -- stats ------------------------------------------------------------------------------


def stats_view(container: Any) -> dict[str, Any]:
    """One sample of the container's resource use (CPU % over the engine's sampling
    interval, memory, network and block I/O, processes)."""
    raw = container.stats(stream=False)
    cpu = raw.get("cpu_stats") or {}
    pre = raw.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (
        pre.get("cpu_usage") or {}
    ).get("total_usage", 0)
    system_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    cpus = (
        cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    )
    cpu_percent = (
        round(cpu_delta / system_delta * cpus * 100, 2)
        if system_delta > 0 and cpu_delta >= 0
        else 0.0
    )
    memory = raw.get("memory_stats") or {}
    usage = int(memory.get("usage") or 0)
    cache = int((memory.get("stats") or {}).get("inactive_file") or 0)
    limit = int(memory.get("limit") or 0)
    used = max(0, usage - cache)
    networks = raw.get("networks") or {}
    blkio = (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    return {
        "cpu_percent": cpu_percent,
        "memory_bytes": used,
        "memory_limit_bytes": limit,
        "memory_percent": round(used / limit * 100, 2) if limit else None,
        "network_rx_bytes": sum(int(n.get("rx_bytes") or 0) for n in networks.values()),
        "network_tx_bytes": sum(int(n.get("tx_bytes") or 0) for n in networks.values()),
        "block_read_bytes": sum(
            int(e.get("value") or 0) for e in blkio if str(e.get("op")).lower() == "read"
        ),
        "block_write_bytes": sum(
            int(e.get("value") or 0) for e in blkio if str(e.get("op")).lower() == "write"
        ),
        "pids": (raw.get("pids_stats") or {}).get("current"),
    }


# -- prune ------------------------------------------------------------------------------


def prune_images(client: Any, *, all_unused: bool) -> dict[str, Any]:
    """``docker image prune``: dangling images (untagged, unused), or with
    ``all_unused`` every image no container uses."""
    result = client.images.prune(filters={"dangling": not all_unused}) or {}
    deleted = result.get("ImagesDeleted") or []
    names = [str(entry.get("Untagged") or entry.get("Deleted") or "") for entry in deleted]
    return {
        "all_unused": all_unused,
        "images_deleted": sum(1 for entry in deleted if entry.get("Deleted")),
        "untagged": sum(1 for entry in deleted if entry.get("Untagged")),
        "space_reclaimed_bytes": int(result.get("SpaceReclaimed") or 0),
        "entries": names[:MAX_IMAGES_LISTED],
    }
