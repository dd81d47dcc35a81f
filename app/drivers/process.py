"""The ``process`` driver: a service runs as a local process of the host; a deployment
stops the old process and starts the new one.

Config (:class:`ProcessConfig`)::

    {"command": ["{python}", "-m", "app.embedded.sample_service", "--port", "{port}"],
     "env": {"GREETING": "hello {service}"}, "cwd": null, "port": 8081,
     "stop_timeout_seconds": 10}

``command`` is an argv list, never a shell string: it is executed directly, nothing in it
is interpreted by a shell. The placeholders ``{version}``, ``{port}``, ``{service}``,
``{environment}`` and ``{python}`` (the control plane's interpreter) are replaced
literally in each argv element and env value; nothing else in the text is special. The
process gets an allowlist of the worker's environment (``PATH``, ``HOME``, ``LANG``,
``LC_*``…; never its ``FORMULA_OPS_*`` settings, which hold the control plane's
credentials: :func:`app.core.child_env.child_env`), then ``env``, then ``SERVICE_VERSION``,
``SERVICE_NAME``, ``SERVICE_ENVIRONMENT`` and ``PORT`` (when ``port`` is set). The argv
line written to the service's log hides the values of secret flags
(:func:`app.core.redaction.redact_argv`).

Host state lives under ``<state_dir>/processes/<environment>/``: ``<service>.json`` (pid,
version, argv, start time; written atomically) so a restarted worker finds what runs,
``<service>.log`` (the process's output, rotated to ``.log.1`` at a start when above
10 MiB) and ``<service>.lock`` (an exclusive ``flock`` held while deploying or stopping,
so two workers never replace the same service at once). A recorded pid only counts as
running while ``/proc/<pid>/stat`` shows the recorded start time (no PID reuse) and the
process is not a zombie.

Started processes are detached (their own session and process group, stdin closed): they
outlive the worker that started them. Stopping sends SIGTERM to the process group, then
SIGKILL after ``stop_timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from app.core.child_env import child_env
from app.core.redaction import redact_argv
from app.core.state_dir import private_dir, private_file
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
from app.drivers.health import probe, wait_healthy
from app.drivers.process_config import DEFAULT_STOP_TIMEOUT_SECONDS, ProcessConfig

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_TAIL_LINES = 5
STARTUP_GRACE_SECONDS = 0.5  # without a health URL: alive this long after start = started
KILL_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.05
_PLACEHOLDER = re.compile(r"\{(version|port|service|environment|python)\}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

# The processes this worker started, by pid: polling them reaps them (no zombies) and
# keeps their exit code. Processes started by an earlier worker are only seen via /proc.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXIT_CODES: dict[int, int] = {}  # of children seen exiting, until reported


@dataclass(frozen=True)
class _State:
    pid: int
    version: str
    argv: list[str]
    started_at: str
    start_time: int | None  # field 22 of /proc/<pid>/stat (clock ticks after boot)


@dataclass(frozen=True)
class _Paths:
    state: Path
    log: Path
    lock: Path


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(item) for item in error["loc"]) or "config"
        parts.append(f"{where}: {error['msg']}")
    return "invalid process config: " + "; ".join(parts)


def _parse_config(config: dict[str, Any]) -> ProcessConfig:
    try:
        return ProcessConfig.model_validate(config)
    except ValidationError as exc:
        raise ValueError(_validation_message(exc)) from None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of ``pid`` from ``/proc``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])  # fields 3 and 22
    except (IndexError, ValueError):
        return None


def _has_proc() -> bool:
    return Path("/proc/self/stat").exists()


def _alive(state: _State) -> bool:
    """Whether the recorded process still runs (and is the one we started)."""
    child = _CHILDREN.get(state.pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[state.pid]  # our child, now reaped
        if len(_EXIT_CODES) > 100:
            _EXIT_CODES.clear()
        _EXIT_CODES[state.pid] = child.returncode
        return False
    if not _has_proc():  # no /proc (not Linux): no PID-reuse check
        try:
            os.kill(state.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = _proc_stat(state.pid)
    if stat is None:
        return False
    status, start_time = stat
    if state.start_time is not None and start_time != state.start_time:
        return False  # the pid now belongs to another process
    if status in ("Z", "X", "x"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(state.pid, os.WNOHANG)  # reap it if it is our child
        return False
    return True


def _exit_code(pid: int) -> int | None:
    return _EXIT_CODES.pop(pid, None)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    """Send ``signum`` to the process group led by ``pid`` (to ``pid`` alone if it does
    not lead a group); no error when it is gone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise DriverError(f"not allowed to signal pid {pid}") from exc


def _kill_group_leftovers(pid: int) -> None:
    """SIGKILL what remains of the process group of a stopped leader (children that
    ignored SIGTERM). A group id cannot be reused while any member lives."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _read_state(path: Path) -> _State | None:
    try:
        data = json.loads(path.read_text())
        return _State(
            pid=int(data["pid"]),
            version=str(data["version"]),
            argv=[str(arg) for arg in data["argv"]],
            started_at=str(data["started_at"]),
            start_time=None if data.get("start_time") is None else int(data["start_time"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable record: treated as nothing running


def _write_state(path: Path, state: _State) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(asdict(state), out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as source:
            source.seek(max(0, source.seek(0, os.SEEK_END) - 8192))
            text = source.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line[:300] for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept)


def _start(
    argv: list[str], env: dict[str, str], cwd: str | None, paths: _Paths, version: str
) -> _State:
    """Start the process and record it (one thread call: a cancelled deploy still leaves
    the process it started recorded, for the next deploy to replace)."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    header = f"--- {started_at} starting {version}: {shlex.join(redact_argv(argv))}\n"
    child = _spawn(argv, env, cwd, paths.log, header)
    _CHILDREN[child.pid] = child
    stat = _proc_stat(child.pid)
    state = _State(child.pid, version, argv, started_at, stat[1] if stat else None)
    _write_state(paths.state, state)
    return state


def _spawn(
    argv: list[str], env: dict[str, str], cwd: str | None, log_path: Path, header: str
) -> subprocess.Popen[bytes]:
    try:
        if log_path.stat().st_size > LOG_MAX_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
    except FileNotFoundError:
        pass
    with private_file(log_path).open("ab") as out:
        out.write(header.encode(errors="replace"))
        out.flush()
        try:
            return subprocess.Popen(  # noqa: S603 - argv from the validated config, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            out.write(f"cannot start {argv[0]}: {exc.strerror or exc}\n".encode())
            raise DriverError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None


class ProcessDriver:
    """Runs each service as one detached local process (see the module docstring)."""

    name = "process"

    def __init__(self, settings: DriverSettings, connection: str | None = None) -> None:
        self.settings = settings

    async def aclose(self) -> None:
        """Nothing to release: started processes outlive the worker by design."""

    # -- Driver interface ---------------------------------------------------------------

    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return _parse_config(config).model_dump(mode="json")

    async def pull(self, spec: ServiceSpec, version: str, log: LogLine) -> str:
        config = self._config(spec)
        argv, env = self._render(config, spec, version)
        executable = argv[0]
        if os.sep in executable:
            path = Path(executable)
            if not path.is_absolute() and config.cwd is not None:
                path = Path(config.cwd) / path
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise DriverError(f"{executable!r} is not an executable file")
            found = str(path)
        else:
            which = shutil.which(executable, path=env.get("PATH"))
            if which is None:
                raise DriverError(f"{executable!r} not found on PATH")
            found = which
        text = (
            f"{found} is an executable file"
            if found == executable
            else f"{executable} resolves to {found}"
        )
        await log(text)
        return text

    async def current(self, spec: ServiceSpec) -> Deployed | None:
        paths = self._paths(spec)
        state = self._running(paths)
        if state is None:
            return None
        return Deployed(
            state.version,
            str(state.pid),
            {
                "pid": state.pid,
                "started_at": state.started_at,
                "argv": state.argv,
                "log": str(paths.log),
            },
        )

    async def deploy(self, spec: ServiceSpec, version: str, log: LogLine) -> DeployResult:
        config = self._config(spec)
        if not version or "\0" in version or "\n" in version:
            raise DriverError(f"invalid version {version!r}")
        paths = self._paths(spec)
        lines: list[str] = []

        async def say(line: str) -> None:
            lines.append(line)
            await log(line)

        async with self._locked(paths, say):
            running = self._running(paths)
            if running is not None and running.version == version:
                if spec.health_url is None:
                    await say(f"{version} already runs (pid {running.pid})")
                    return self._unchanged(version, running, lines)
                result = await probe(spec.health_url)
                if result.healthy and result.version in (None, version):
                    await say(f"{version} already runs healthy (pid {running.pid})")
                    return self._unchanged(version, running, lines)
                await say(f"{version} runs (pid {running.pid}) but is unhealthy: {result.detail}")
            previous = running.version if running is not None else None
            if running is not None:
                await self._terminate(running, config.stop_timeout_seconds, say)

            argv, env = self._render(config, spec, version)
            state = await asyncio.to_thread(_start, argv, env, config.cwd, paths, version)
            await say(f"started pid {state.pid} ({version})")
            await self._await_started(spec, state, paths, say)
        return DeployResult(
            version, previous, changed=True, output="\n".join(lines), details={"pid": state.pid}
        )

    async def health(self, spec: ServiceSpec) -> HealthResult:
        state = self._running(self._paths(spec))
        if state is None:
            return HealthResult(False, detail="not running")
        if spec.health_url is None:
            return HealthResult(False, version=state.version, detail="no health URL")
        return await probe(spec.health_url)

    async def stop(self, spec: ServiceSpec, log: LogLine) -> None:
        try:  # a config broken since the start must not keep the process running
            grace = self._config(spec).stop_timeout_seconds
        except DriverError:
            grace = DEFAULT_STOP_TIMEOUT_SECONDS
        paths = self._paths(spec)
        async with self._locked(paths, log):
            running = self._running(paths)
            if running is None:
                await log("nothing runs")
            else:
                await self._terminate(running, grace, log)
                await log(f"stopped pid {running.pid} ({running.version})")
            paths.state.unlink(missing_ok=True)

    # -- internals ------------------------------------------------------------------------

    def _config(self, spec: ServiceSpec) -> ProcessConfig:
        try:
            return _parse_config(spec.config)
        except ValueError as exc:
            raise DriverError(f"{spec.environment}/{spec.name}: {exc}") from None

    def _paths(self, spec: ServiceSpec) -> _Paths:
        for label, value in (("environment", spec.environment), ("service", spec.name)):
            if not _SAFE_NAME.fullmatch(value):
                raise DriverError(f"{label} name {value!r} cannot name a state file")
        base = private_dir(private_dir(self.settings.state_dir / "processes") / spec.environment)
        return _Paths(
            base / f"{spec.name}.json", base / f"{spec.name}.log", base / f"{spec.name}.lock"
        )

    @staticmethod
    def _running(paths: _Paths) -> _State | None:
        state = _read_state(paths.state)
        return state if state is not None and _alive(state) else None

    @staticmethod
    def _render(
        config: ProcessConfig, spec: ServiceSpec, version: str
    ) -> tuple[list[str], dict[str, str]]:
        values = {
            "version": version,
            "port": "" if config.port is None else str(config.port),
            "service": spec.name,
            "environment": spec.environment,
            "python": sys.executable,
        }

        def fill(text: str) -> str:
            # One literal pass: a value is never scanned again, nothing is a format spec.
            return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)

        env = child_env({key: fill(value) for key, value in config.env.items()})
        env["SERVICE_VERSION"] = version
        env["SERVICE_NAME"] = spec.name
        env["SERVICE_ENVIRONMENT"] = spec.environment
        if config.port is not None:
            env["PORT"] = str(config.port)
        return [fill(arg) for arg in config.command], env

    @staticmethod
    def _unchanged(version: str, state: _State, lines: list[str]) -> DeployResult:
        return DeployResult(
            version, version, changed=False, output="\n".join(lines), details={"pid": state.pid}
        )

    @contextlib.asynccontextmanager
    async def _locked(self, paths: _Paths, log: LogLine) -> AsyncIterator[None]:
        """Hold the service's exclusive ``flock`` (other workers wait)."""
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited (PEP 446)
        owned = True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                await log("waiting for another operation on this service to finish")
                waiter = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
                try:
                    await asyncio.shield(waiter)
                except BaseException:
                    # Cancelled while the thread still waits: close once it is done, which
                    # also releases the lock it may take meanwhile.
                    owned = False
                    waiter.add_done_callback(lambda _: os.close(fd))
                    raise
            yield
        finally:
            if owned:
                os.close(fd)

    async def _terminate(self, state: _State, grace: float, log: LogLine) -> None:
        await log(f"stopping pid {state.pid} ({state.version})")
        _signal_group(state.pid, signal.SIGTERM)
        if not await self._wait_gone(state, grace):
            await log(f"pid {state.pid} still runs after {grace:g} s: SIGKILL")
            _signal_group(state.pid, signal.SIGKILL)
            if not await self._wait_gone(state, KILL_WAIT_SECONDS):
                raise DriverError(f"pid {state.pid} did not stop")
        _kill_group_leftovers(state.pid)
        _CHILDREN.pop(state.pid, None)

    @staticmethod
    async def _wait_gone(state: _State, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while _alive(state):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)
        return True

    async def _await_started(
        self, spec: ServiceSpec, state: _State, paths: _Paths, log: LogLine
    ) -> None:
        """Return once the new process is healthy; raise :class:`UnhealthyError` if it
        exits or does not become healthy (it stays recorded: a rollback replaces it)."""
        if spec.health_url is None:
            await asyncio.sleep(STARTUP_GRACE_SECONDS)
            if not _alive(state):
                raise UnhealthyError(self._exited_message(state, paths))
            await log(f"pid {state.pid} still runs after {STARTUP_GRACE_SECONDS:g} s")
            return
        timeout = spec.health_timeout_seconds
        waiting = asyncio.create_task(
            wait_healthy(spec.health_url, version=state.version, timeout=timeout)
        )
        try:
            while not waiting.done():
                await asyncio.wait({waiting}, timeout=0.1)
                if not waiting.done() and not _alive(state):
                    raise UnhealthyError(self._exited_message(state, paths))
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.wait({waiting})
        result = waiting.result()
        if result.healthy and result.version in (None, state.version):
            await log(f"healthy: {result.detail}")
            return
        detail = result.detail
        if result.healthy:
            detail += f", but it reports version {result.version}"
        message = f"{state.version} not healthy after {timeout:g} s: {detail}"
        tail = _log_tail(paths.log)
        raise UnhealthyError(f"{message}\nlast log lines:\n{tail}" if tail else message)

    @staticmethod
    def _exited_message(state: _State, paths: _Paths) -> str:
        code = _exit_code(state.pid)
        how = "exited" if code is None else f"exited with code {code}"
        message = f"{state.version} (pid {state.pid}) {how} before becoming healthy"
        tail = _log_tail(paths.log)
        return f"{message}\nlast log lines:\n{tail}" if tail else message
