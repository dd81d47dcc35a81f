"""``formula-ops serve`` as a user runs it: a subprocess on a free port, stopped by signal."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.embedded import process_alive
from tests.e2e.serve_process import FORMULA_OPS, ServeProcess

pytestmark = pytest.mark.slow


Served = ServeProcess


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    instance = Served(tmp_path)
    yield instance
    if instance.process.poll() is None:
        instance.process.kill()
        instance.process.wait()


class TestServe:
    def test_serves_health_and_ready_and_stops_cleanly_on_sigterm(self, served: Served) -> None:
        served.wait_healthy()
        ready = httpx.get(f"{served.url}/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"]["status"] == "ok"
        assert ready.json()["checks"]["redis"]["status"] == "ok"
        redis_pid = served.redis_pid
        assert process_alive(redis_pid)
        assert (served.workdir / ".formula-ops" / "formula-ops.db").exists()

        assert served.stop(signal.SIGTERM) == 0
        assert not process_alive(redis_pid), "serve left its redis-server behind"
        output = served.output()
        assert f"Formula Ops is serving on {served.url}" in output
        assert "Traceback" not in output

    def test_ctrl_c_stops_cleanly(self, served: Served) -> None:
        served.wait_healthy()
        redis_pid = served.redis_pid
        assert served.stop(signal.SIGINT) == 0
        assert not process_alive(redis_pid)

    def test_a_killed_serve_leaves_nothing_the_next_one_keeps(self, tmp_path: Path) -> None:
        first = Served(tmp_path)
        first.wait_healthy()
        orphan = first.redis_pid
        first.process.kill()  # SIGKILL: no clean-up runs
        first.process.wait()
        first.log.close()

        second = Served(tmp_path)
        try:
            second.wait_healthy()
            assert not process_alive(orphan), "the leftover redis-server was not stopped"
            assert second.stop() == 0
            assert not process_alive(
                second.redis_pid if (tmp_path / ".formula-ops/redis.pid").exists() else orphan
            )
        finally:
            if second.process.poll() is None:
                second.process.kill()


def test_prefer_wait_health_check_in_one_call(served: Served) -> None:
    """The acceptance call on a fresh embedded default: one request, the finished run."""
    served.wait_healthy()
    created = subprocess.run(
        [str(FORMULA_OPS), "tokens", "create", "--role", "operator", "--name", "e2e"],
        cwd=served.workdir,
        env={k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")},
        capture_output=True,
        text=True,
        check=True,
    )
    token = created.stdout.strip().splitlines()[-1]
    response = httpx.post(
        f"{served.url}/v1/health-checks",
        headers={"Authorization": f"Bearer {token}", "Prefer": "wait=30"},
        timeout=40,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] in ("success", "failure"), body
    steps = {s["name"]: s for s in body["steps"]}
    assert steps["service formula-ops"]["status"] == "success"  # it probed itself
    assert steps["database"]["status"] == "success"
    assert steps["redis"]["status"] == "success"
    assert all(s["status"] != "pending" for s in body["steps"])
    assert served.stop() == 0
