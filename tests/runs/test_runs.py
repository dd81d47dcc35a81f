"""Runs over HTTP: the daily health check created, waited for, followed and cancelled,
with a real arq worker running beside the API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.auth.roles import Role
from app.core.context import AppContext
from app.runs import service as run_service
from app.runs.models import RunKind
from app.runs.service import StepSpec
from tests.factories import IssuedToken, app_with, issue_token


class _Target(BaseHTTPRequestHandler):
    """A service to probe: /health answers 200, /slow after 1.2 s, /down 503."""

    def do_GET(self) -> None:
        if self.path == "/slow":
            threading.Event().wait(1.2)
        status = 503 if self.path == "/down" else 200
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def probe_settings(target: str, *paths: str) -> dict[str, Any]:
    services = [{"name": p.strip("/") or "root", "url": f"{target}{p}"} for p in paths]
    return {"health_check": {"services": services, "disk_paths": ["/"], "log_files": []}}


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


class TestDryRun:
    async def test_returns_the_plan_and_writes_nothing(
        self, context: AppContext, operator: IssuedToken, target: str
    ) -> None:
        app = app_with(context, **probe_settings(target, "/health"))
        async with client_for(app) as http:
            response = await http.post(
                "/v1/health-checks", json={"dry_run": True}, headers=operator.headers
            )
            listed = await http.get("/v1/runs", headers=operator.headers)
        assert response.status_code == 200
        body = response.json()
        assert body["dry_run"] is True
        actions = [s["action"] for s in body["steps"]]
        assert actions == ["http", "disk", "memory", "backup_age", "database", "redis"]
        assert body["steps"][0]["params"]["url"] == f"{target}/health"
        assert listed.json()["items"] == []


class TestHealthCheck:
    async def test_queued_answer_is_202_with_location(
        self, context: AppContext, operator: IssuedToken, target: str
    ) -> None:
        app = app_with(context, **probe_settings(target, "/health"))
        async with client_for(app) as http:
            response = await http.post("/v1/health-checks", headers=operator.headers)
            assert response.status_code == 202
            body = response.json()
            assert response.headers["location"] == f"/v1/health-checks/{body['id']}"
            assert body["status"] == "queued"
            assert {s["status"] for s in body["steps"]} == {"pending"}
            fetched = await http.get(response.headers["location"], headers=operator.headers)
            assert fetched.json()["id"] == body["id"]

    async def test_prefer_wait_returns_the_finished_run_in_one_call(
        self, context: AppContext, operator: IssuedToken, target: str, worker: None
    ) -> None:
        app = app_with(context, **probe_settings(target, "/health"))
        async with client_for(app) as http:
            response = await http.post(
                "/v1/health-checks", headers={**operator.headers, "Prefer": "wait=30"}
            )
        assert response.status_code == 201, response.text
        assert response.headers["preference-applied"] == "wait=30"
        body = response.json()
        assert body["status"] == "success", body
        assert body["failure"] is None
        steps = {s["name"]: s for s in body["steps"]}
        assert steps["service health"]["level"] == "ok"
        assert steps["service health"]["result"]["status_code"] == 200
        assert steps["database"]["status"] == "success"
        assert steps["redis"]["status"] == "success"
        # No backup of the control plane has been taken yet: a warning, not a failure.
        assert steps["newest backup"]["level"] == "warning"
        assert [t["target"] for t in steps["newest backup"]["result"]["targets"]] == [
            "control plane"
        ]
        assert steps["newest backup"]["result"]["targets"][0]["age_hours"] is None
        assert all(s["finished_at"] for s in body["steps"])
        assert body["result"]["overall"] in ("ok", "warning")

    async def test_slow_and_failing_services_are_warning_and_critical(
        self, context: AppContext, operator: IssuedToken, target: str, worker: None
    ) -> None:
        app = app_with(context, **probe_settings(target, "/slow", "/down"))
        async with client_for(app) as http:
            response = await http.post(
                "/v1/health-checks", headers={**operator.headers, "Prefer": "wait=30"}
            )
        body = response.json()
        assert body["status"] == "failure"
        assert body["failure"]["type"] == "/problems/health-check-failed"
        steps = {s["name"]: s for s in body["steps"]}
        assert steps["service slow"]["level"] == "warning"
        assert steps["service down"]["level"] == "critical"
        assert steps["redis"]["status"] == "success"  # every probe ran despite the failure
        assert "service down" in body["result"]["critical"]

    async def test_short_wait_answers_202_with_retry_after(
        self, context: AppContext, operator: IssuedToken, target: str
    ) -> None:
        app = app_with(context, **probe_settings(target, "/health"))
        async with client_for(app) as http:
            response = await http.post(
                "/v1/health-checks", headers={**operator.headers, "Prefer": "wait=1"}
            )
        assert response.status_code == 202
        assert response.headers["retry-after"]
        assert response.json()["status"] == "queued"

    async def test_replay_after_wait_returns_the_final_answer(
        self, context: AppContext, operator: IssuedToken, target: str, worker: None
    ) -> None:
        app = app_with(context, **probe_settings(target, "/health"))
        headers = {**operator.headers, "Prefer": "wait=30", "Idempotency-Key": "hc-1"}
        async with client_for(app) as http:
            first = await http.post("/v1/health-checks", headers=headers)
            again = await http.post("/v1/health-checks", headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"

    async def test_viewers_cannot_start_one(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        viewer = await issue_token(context, Role.VIEWER)
        response = await client.post("/v1/health-checks", headers=viewer.headers)
        assert response.status_code == 403


async def _create(context: AppContext, steps: list[StepSpec]) -> str:
    async with context.unit_of_work() as uow:
        run = await run_service.create_run(
            uow, context, kind=RunKind.PLAYBOOK, steps=steps, requested_by="tests"
        )
    return run.id


class TestWaitingAndFollowing:
    async def test_long_poll_returns_when_the_run_ends(
        self, client: httpx.AsyncClient, context: AppContext, operator: IssuedToken, worker: None
    ) -> None:
        run_id = await _create(context, [StepSpec("pause", "wait", {"seconds": 0.3})])
        response = await client.get(f"/v1/runs/{run_id}?wait=20", headers=operator.headers)
        assert response.json()["status"] == "success"

    async def test_events_stream_in_order_and_resume(
        self, client: httpx.AsyncClient, context: AppContext, operator: IssuedToken, worker: None
    ) -> None:
        run_id = await _create(
            context, [StepSpec(f"step {i}", "wait", {"seconds": 0.05}) for i in range(3)]
        )
        frames = await read_sse(client, f"/v1/runs/{run_id}/events", operator.headers)
        types = [event for _, event, _ in frames]
        assert types == [
            "run.queued",
            "run.started",
            "step.started",
            "step.finished",
            "step.started",
            "step.finished",
            "step.started",
            "step.finished",
            "run.finished",
        ]
        ids = [event_id for event_id, _, _ in frames]
        assert ids == list(range(1, len(frames) + 1))
        resumed = await read_sse(
            client, f"/v1/runs/{run_id}/events", {**operator.headers, "Last-Event-ID": "4"}
        )
        assert [i for i, _, _ in resumed] == ids[4:]
        after_the_end = await read_sse(
            client, f"/v1/runs/{run_id}/events", {**operator.headers, "Last-Event-ID": str(ids[-1])}
        )
        assert after_the_end == []  # the stream ends instead of waiting forever

    async def test_unknown_run_is_404(
        self, client: httpx.AsyncClient, operator: IssuedToken
    ) -> None:
        for path in ("/v1/runs/nope", "/v1/runs/nope/events", "/v1/health-checks/nope"):
            response = await client.get(path, headers=operator.headers)
            assert response.status_code == 404, path
            assert response.json()["type"] == "/problems/run-not-found"

    async def test_environment_restricted_token_sees_only_its_environment(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        run_id = await _create(context, [StepSpec("pause", "wait", {"seconds": 0})])
        staging = await issue_token(context, Role.VIEWER, environment="staging")
        assert (await client.get(f"/v1/runs/{run_id}", headers=staging.headers)).status_code == 404
        listed = await client.get("/v1/runs", headers=staging.headers)
        assert listed.json()["items"] == []


class TestCancel:
    async def test_queued_run_is_cancelled_at_once(
        self, client: httpx.AsyncClient, context: AppContext, operator: IssuedToken
    ) -> None:
        run_id = await _create(context, [StepSpec("pause", "wait", {"seconds": 0})])
        response = await client.post(f"/v1/runs/{run_id}/cancel", headers=operator.headers)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "cancelled"
        assert body["steps"][0]["status"] == "cancelled"
        again = await client.post(f"/v1/runs/{run_id}/cancel", headers=operator.headers)
        assert again.status_code == 409

    async def test_running_run_stops_after_its_current_step(
        self, client: httpx.AsyncClient, context: AppContext, operator: IssuedToken, worker: None
    ) -> None:
        run_id = await _create(
            context, [StepSpec(f"step {i}", "wait", {"seconds": 0.5}) for i in range(4)]
        )
        for _ in range(100):
            run = (await client.get(f"/v1/runs/{run_id}", headers=operator.headers)).json()
            if run["steps"][0]["status"] == "in_progress":
                break
            await asyncio.sleep(0.05)
        response = await client.post(f"/v1/runs/{run_id}/cancel", headers=operator.headers)
        assert response.json()["cancel_requested"] is True
        final = (await client.get(f"/v1/runs/{run_id}?wait=20", headers=operator.headers)).json()
        assert final["status"] == "cancelled"
        statuses = [s["status"] for s in final["steps"]]
        assert statuses[0] == "success"
        assert statuses[-1] == "cancelled"


class TestStepFailures:
    async def test_timeout_is_its_own_problem(
        self, client: httpx.AsyncClient, context: AppContext, operator: IssuedToken, worker: None
    ) -> None:
        run_id = await _create(
            context,
            [
                StepSpec("too slow", "wait", {"seconds": 5}, timeout_seconds=0.2),
                StepSpec("never reached", "wait", {"seconds": 0}),
            ],
        )
        final = (await client.get(f"/v1/runs/{run_id}?wait=20", headers=operator.headers)).json()
        assert final["status"] == "failure"
        assert final["failure"]["type"] == "/problems/timeout"
        assert [s["status"] for s in final["steps"]] == ["failure", "pending"]

    async def test_shell_output_is_captured_and_exit_codes_fail(
        self, client: httpx.AsyncClient, context: AppContext, operator: IssuedToken, worker: None
    ) -> None:
        run_id = await _create(
            context,
            [
                StepSpec("hello", "shell", {"argv": ["sh", "-c", "echo hello; echo oops >&2"]}),
                StepSpec("fails", "shell", {"argv": ["sh", "-c", "exit 3"]}),
            ],
        )
        final = (await client.get(f"/v1/runs/{run_id}?wait=20", headers=operator.headers)).json()
        first, second = final["steps"]
        assert first["output"] == "hello\noops\n"
        assert second["status"] == "failure"
        assert second["error"] == "exit code 3"
        assert final["failure"]["type"] == "/problems/step-failed"

    async def test_invalid_plan_is_refused_before_anything_is_written(
        self, context: AppContext
    ) -> None:
        from app.core.errors import ValidationFailed

        with pytest.raises(ValidationFailed):
            await _create(context, [StepSpec("bad", "shell", {"argv": "rm -rf /"})])


async def read_sse(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> list[tuple[int, str, dict[str, Any]]]:
    import json

    frames: list[tuple[int, str, dict[str, Any]]] = []
    async with asyncio.timeout(30), client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event_id, event, data = 0, "", ""
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and event:
                frames.append((event_id, event, json.loads(data)))
                event, data = "", ""
    return frames


def _running_with(variable: str) -> list[int]:
    """Pids of the processes whose environment holds ``variable`` (``NAME=value``) and
    that still run (a zombie has ended: only its exit status is left for its parent)."""
    running = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):  # not a process, not ours, or it ended meanwhile
            continue
        if variable.encode() in environ and state != "Z":
            running.append(int(proc.name))
    return running


class TestShellLogs:
    async def test_output_streams_as_log_events(
        self, client: httpx.AsyncClient, context: AppContext, operator: IssuedToken, worker: None
    ) -> None:
        script = "echo first; sleep 0.7; echo second"
        run_id = await _create(context, [StepSpec("talk", "shell", {"argv": ["sh", "-c", script]})])
        frames = await read_sse(client, f"/v1/runs/{run_id}/events", operator.headers)
        logs = [data["line"] for _, event, data in frames if event == "log"]
        assert "".join(logs) == "first\nsecond\n"
        assert len(logs) == 2  # the first line went out while the program still ran

    async def test_a_timed_out_program_and_its_children_are_killed(
        self,
        client: httpx.AsyncClient,
        context: AppContext,
        operator: IssuedToken,
        worker: None,
        tmp_path: Path,
    ) -> None:
        """Its processes carry a variable of this test in their environment, so only they
        are looked at, never the machine's others; the child's pid, written once it
        started, makes the test fail instead of passing if it never did."""
        mark = uuid.uuid4().hex
        started = tmp_path / "started"
        # the child's output does not go to the pipe: killing only the program would end
        # the step as well, and leave the child running
        script = 'sleep 30 > /dev/null 2>&1 & echo $! > "$STARTED"; wait'
        step = {
            "argv": ["sh", "-c", script],
            "env": {"STARTED": str(started), "TIMEOUT_TEST": mark},
            "timeout_seconds": 2.0,
        }
        run_id = await _create(context, [StepSpec("hang", "shell", step)])
        try:
            final = await client.get(f"/v1/runs/{run_id}?wait=20", headers=operator.headers)
            assert final.json()["steps"][0]["error"] == "timed out after 2.0 s"
            assert started.exists(), "the program had not started its child"
            assert _running_with(f"TIMEOUT_TEST={mark}") == []
        finally:  # a failed test leaves nothing behind
            for pid in _running_with(f"TIMEOUT_TEST={mark}"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
