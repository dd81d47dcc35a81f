"""``formula-ops serve`` as a subprocess on a free port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import free_port

FORMULA_OPS = Path(sys.executable).parent / "formula-ops"


class ServeProcess:
    """``formula-ops serve`` started in ``workdir`` (state under ``workdir/.formula-ops``)."""

    def __init__(self, workdir: Path, **settings: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = workdir / ".formula-ops"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
        self.env["FORMULA_OPS_STATE_DIR"] = str(self.state_dir)
        self.env["FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED"] = "false"  # no run but ours
        self.env["PYTHONFAULTHANDLER"] = "1"
        self.env.update(settings)
        self.log = (workdir / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [str(FORMULA_OPS), "serve", "--port", str(self.port)],
            cwd=workdir,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not become healthy:\n{self.output()}")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.workdir / "serve.log").read_text(errors="replace")

    @property
    def redis_pid(self) -> int:
        return int((self.state_dir / "redis.pid").read_text())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig``; a serve that does not stop in ``timeout`` is made to dump its
        threads' stacks (faulthandler, on SIGABRT) into its log, and the test fails."""
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(10)
            with contextlib.suppress(OSError, ValueError):  # its redis-server, orphaned
                os.kill(int((self.state_dir / "redis.pid").read_text()), signal.SIGKILL)
            raise AssertionError(
                f"serve did not stop within {timeout} s of SIGTERM:\n{self.output()}"
            ) from None
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.close()
