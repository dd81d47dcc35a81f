"""``formula-ops runs list|watch`` and ``formula-ops health-check`` as an operator runs
them: the real executable against ``formula-ops serve`` (embedded SQLite + Redis) on a free
port, with a token made by ``formula-ops tokens create`` in the same state directory.

The SSE reader of ``app.cli.client`` (reconnection with ``Last-Event-ID``, bounded retries) is
checked in-process against a transport that drops the connection.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli.client import ApiError, Client, ConfigurationError, ConnectionFailed, default_url
from tests.e2e.serve_process import FORMULA_OPS, ServeProcess
from tests.helpers import free_port

pytestmark = pytest.mark.slow
TOKEN = re.compile(r"^fops_[0-9a-z]{16}_[0-9A-Za-z]{38}$")
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LIST_COLUMNS = ["id", "kind", "status", "environment", "requested by", "created", "duration"]


class Server(ServeProcess):
    """``formula-ops serve`` in ``workdir``, and the CLI pointed at it."""

    def __init__(self, workdir: Path, **settings: str) -> None:
        super().__init__(workdir, **settings)
        self.token = ""

    # -- the command line ------------------------------------------------------------

    def cli(self, *args: str, code: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
        """``formula-ops ARGS`` with FORMULA_OPS_URL and _TOKEN (overridden by ``env``);
        stdout is a pipe, not a terminal."""
        result = subprocess.run(
            [str(FORMULA_OPS), *args],
            cwd=self.workdir,
            env={**self.env, "FORMULA_OPS_URL": self.url, "FORMULA_OPS_TOKEN": self.token, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == code, (
            f"`formula-ops {' '.join(args)}` exited {result.returncode}, expected {code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert "Traceback" not in result.stdout + result.stderr
        return result

    def create_token(self) -> None:
        out = self.cli("tokens", "create", "--role", "admin", "--name", "cli runs").stdout
        value = out.strip().splitlines()[-1]
        assert TOKEN.match(value), out
        self.token = value

    # -- the API, directly -----------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            f"{self.url}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def run_ids(self) -> list[str]:
        return [r["id"] for r in self.get("/v1/runs", limit=200)["items"]]

    def idempotency_keys(self) -> int:
        database = self.state_dir / "formula-ops.db"
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            count: int = conn.execute("SELECT count(*) FROM idempotency_key").fetchone()[0]
        conn.close()
        return count


def stop_sample_services(state_dir: Path) -> None:
    """A backstop for a ``serve`` that did not stop its sample services (killed)."""
    for state in (state_dir / "processes").glob("*/*.json"):
        try:
            pid = json.loads(state.read_text())["pid"]
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


def sample_ports() -> dict[str, str]:
    """Free ports for the seeded ``local`` environment's sample services."""
    return {
        "FORMULA_OPS_LOCAL_BACKEND_PORT": str(free_port()),
        "FORMULA_OPS_LOCAL_FRONTEND_PORT": str(free_port()),
    }


def serve_with_cli(workdir: Path, *, token: bool = True, **settings: str) -> Iterator[Server]:
    """A module's ``serve`` (with an admin token for its CLI unless ``token`` is false),
    stopped with SIGTERM afterwards, which must exit 0."""
    server = Server(workdir, **settings)
    try:
        server.wait_healthy()
        if token:
            server.create_token()
        yield server
    finally:
        if server.process.poll() is None:
            code = server.stop()
            assert code == 0, f"serve exited {code} on SIGTERM:\n{server.output()}"
        stop_sample_services(server.state_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve_with_cli(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose health check probes a disk path that does not exist: critical."""
    yield from serve_with_cli(
        tmp_path_factory.mktemp("serve-failing"),
        FORMULA_OPS_HEALTH_CHECK__DISK_PATHS='["/", "/no/such/disk"]',
    )


class Waited:
    def __init__(self, result: subprocess.CompletedProcess[str], run: dict[str, Any]) -> None:
        self.result = result
        self.run = run

    @property
    def lines(self) -> list[str]:
        return self.result.stdout.splitlines()


@pytest.fixture(scope="module")
def waited(server: Server) -> Waited:
    """``formula-ops health-check --wait``, and the run it made as the API reads it."""
    result = server.cli("health-check", "--wait")
    found = RUN_ID.search(result.stdout.splitlines()[0])
    assert found, result.stdout
    return Waited(result, server.get(f"/v1/runs/{found.group()}"))


def _assert_every_step_shown(output: str, run: dict[str, Any]) -> None:
    lines = output.splitlines()
    assert run["steps"], run
    for step in run["steps"]:
        label = f"[{step['position']}] {step['name']}"
        started = [line for line in lines if label in line and line.endswith("started")]
        finished = [line for line in lines if f"{label}  {step['status']}  " in line]
        assert len(started) == 1, (label, output)
        assert len(finished) == 1, (label, output)
        assert f"  {step['level'] or '-'}  " in finished[0], (finished[0], step)
        assert re.search(r"  \d+(\.\d+)? (ms|s)\b", finished[0]), finished[0]
        assert lines.index(started[0]) < lines.index(finished[0])


class TestHealthCheck:
    def test_wait_follows_every_step_and_exits_0(self, waited: Waited) -> None:
        run = waited.run
        assert run["kind"] == "health_check"
        assert run["status"] == "success", run
        assert run["id"] in waited.lines[0]
        _assert_every_step_shown(waited.result.stdout, run)
        assert re.fullmatch(rf"Run {run['id']} succeeded in \d.*\.", waited.lines[-1])
        assert waited.result.stderr == ""

    def test_without_wait_prints_the_id_and_location(self, server: Server) -> None:
        keys = server.idempotency_keys()
        result = server.cli("health-check")
        found = RUN_ID.search(result.stdout)
        assert found, result.stdout
        run_id = found.group()
        location = f"{server.url}/v1/health-checks/{run_id}"
        assert f"Location: {location}" in result.stdout.splitlines()
        assert server.get(f"/v1/health-checks/{run_id}")["id"] == run_id
        assert server.idempotency_keys() == keys + 1  # it sent an Idempotency-Key
        # it finishes all the same
        assert server.get(f"/v1/runs/{run_id}", wait=30)["status"] == "success"

    def test_dry_run_prints_the_plan_and_creates_no_run(
        self, server: Server, waited: Waited
    ) -> None:
        before = server.run_ids()
        result = server.cli("health-check", "--dry-run")
        lines = result.stdout.splitlines()
        assert "Dry run" in lines[0]
        assert "nothing was queued" in lines[0]
        assert lines[1].split("\t") == ["position", "name", "action", "timeout", "params"]
        planned = [line.split("\t") for line in lines[2:]]
        assert [(int(p[0]), p[1]) for p in planned] == [
            (step["position"], step["name"]) for step in waited.run["steps"]
        ]
        assert server.run_ids() == before

    def test_a_failing_check_exits_1_with_the_reason(self, failing_server: Server) -> None:
        result = failing_server.cli("health-check", "--wait", code=1)
        run_id = RUN_ID.search(result.stdout)
        assert run_id
        lines = result.stdout.splitlines()
        outcome = lines[-2]
        assert outcome.startswith(f"Run {run_id.group()} failure after "), result.stdout
        assert "Health check failed: critical: disk /no/such/disk" in outcome
        # the step's own error, which the run's reason does not give, follows it (once)
        assert re.fullmatch(r"  \[\d+\] disk /no/such/disk: .*No such file.*", lines[-1])
        assert result.stdout.count("No such file") == 1, result.stdout
        assert re.search(r"\[\d+\] disk /no/such/disk  failure  critical  \S", result.stdout)
        assert failing_server.get(f"/v1/runs/{run_id.group()}")["status"] == "failure"
        # watching it again says the same
        again = failing_server.cli("runs", "watch", run_id.group(), code=1).stdout.splitlines()
        assert again[-2].split(" after ")[0] == outcome.split(" after ")[0]
        assert again[-1] == lines[-1]


class TestRuns:
    def test_list_is_tab_separated_when_piped(self, server: Server, waited: Waited) -> None:
        lines = server.cli("runs", "list").stdout.splitlines()
        assert lines[0].split("\t") == LIST_COLUMNS
        rows = {cells[0]: cells for cells in (line.split("\t") for line in lines[1:])}
        assert all(len(cells) == len(LIST_COLUMNS) for cells in rows.values()), lines
        row = rows[waited.run["id"]]
        assert row[1:5] == ["health_check", "success", "-", waited.run["requested_by"]]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[5])
        assert re.fullmatch(r"\d+(\.\d+)? (ms|s)|\d+ min \d+ s", row[6]), row

    def test_list_filters_and_limits(self, server: Server, waited: Waited) -> None:
        newest = server.cli("runs", "list", "--kind", "health_check", "--limit", "1")
        assert len(newest.stdout.splitlines()) == 2
        succeeded = server.cli("runs", "list", "--status", "success", "--limit", "200").stdout
        assert waited.run["id"] in succeeded
        failed = server.cli("runs", "list", "--status", "failure").stdout.splitlines()
        assert failed == ["\t".join(LIST_COLUMNS)]
        other = server.cli("runs", "list", "--kind", "deployment").stdout.splitlines()
        assert other == ["\t".join(LIST_COLUMNS)]

    def test_watch_replays_a_finished_run_and_exits_0(self, server: Server, waited: Waited) -> None:
        result = server.cli("runs", "watch", waited.run["id"])
        _assert_every_step_shown(result.stdout, waited.run)
        steps = [line for line in result.stdout.splitlines() if re.search(r"\[\d+\] ", line)]
        original = [line for line in waited.lines if re.search(r"\[\d+\] ", line)]
        assert steps == original  # the same events, in the same order
        assert result.stdout.splitlines()[-1].startswith(f"Run {waited.run['id']} succeeded")

    def test_watch_of_an_unknown_run_exits_2(self, server: Server) -> None:
        result = server.cli("runs", "watch", "no-such-run", code=2)
        assert result.stdout == ""
        assert result.stderr.strip() == "Run not found: No run 'no-such-run' (404)"

    def test_usage_errors_exit_2(self, server: Server) -> None:
        server.cli("runs", "watch", code=2)
        server.cli("runs", "list", "--status", "sideways", code=2)
        server.cli("runs", "list", "--limit", "0", code=2)

    def test_kind_offers_only_the_kinds_that_exist(self, server: Server) -> None:
        helped = server.cli("runs", "list", "--help", COLUMNS="200").stdout
        kinds = (
            "deployment, rollback, backup, backup_verification, restore, health_check, "
            "maintenance, playbook"
        )
        assert kinds in " ".join(re.sub("[│╭╮╰╯─]", " ", helped).split())
        refused = server.cli("runs", "list", "--kind", "deploy", code=2, COLUMNS="200")
        message = " ".join(re.sub("[│╭╮╰╯─]", " ", refused.stderr).split())
        assert f"'deploy' is not one of {kinds}" in message
        server.cli("runs", "list", "--kind", "playbook")
        server.cli("runs", "list", "--kind", "rollback")
        server.cli("runs", "list", "--kind", "backup_verification")

    def test_without_a_url_the_cli_finds_the_server_by_its_port(self, server: Server) -> None:
        found = server.cli(
            "runs", "list", FORMULA_OPS_URL="", FORMULA_OPS_PORT=str(server.port)
        ).stdout
        assert found.splitlines()[0].split("\t") == LIST_COLUMNS
        elsewhere = free_port()
        missed = server.cli(
            "runs",
            "list",
            code=2,
            FORMULA_OPS_URL="",
            FORMULA_OPS_HOST="0.0.0.0",
            FORMULA_OPS_PORT=str(elsewhere),
        )
        assert missed.stderr.strip() == f"Cannot reach http://127.0.0.1:{elsewhere} (ConnectError)"


class TestRefusals:
    @pytest.mark.parametrize(
        "args",
        [("runs", "list"), ("runs", "watch", "anything"), ("health-check", "--wait")],
    )
    def test_a_bad_token_exits_2_with_one_line(self, server: Server, args: tuple[str, ...]) -> None:
        bad = "fops_0000000000000000_" + "x" * 38
        result = server.cli(*args, code=2, FORMULA_OPS_TOKEN=bad)
        assert result.stdout == ""
        message = result.stderr.strip()
        assert "\n" not in message
        assert message.startswith("Authentication required")
        assert message.endswith("(401)")
        assert bad not in message

    def test_no_token_exits_2(self, server: Server) -> None:
        result = server.cli("runs", "list", code=2, FORMULA_OPS_TOKEN="")
        assert "FORMULA_OPS_TOKEN is not set" in result.stderr

    def test_an_unreachable_server_exits_2(self, server: Server) -> None:
        nowhere = f"http://127.0.0.1:{free_port()}"
        result = server.cli("runs", "list", code=2, FORMULA_OPS_URL=nowhere)
        assert result.stderr.strip() == f"Cannot reach {nowhere} (ConnectError)"


class TestDefaultUrl:
    def test_the_servers_own_host_and_port(self) -> None:
        assert default_url({}) == "http://127.0.0.1:8000"
        assert default_url({"FORMULA_OPS_PORT": "9001"}) == "http://127.0.0.1:9001"
        assert default_url({"FORMULA_OPS_HOST": "10.1.2.3"}) == "http://10.1.2.3:8000"
        assert default_url({"FORMULA_OPS_HOST": "::"}) == "http://[::1]:8000"
        assert default_url({"FORMULA_OPS_HOST": "::1", "FORMULA_OPS_PORT": "1"}) == (
            "http://[::1]:1"
        )

    def test_the_url_wins(self) -> None:
        env = {"FORMULA_OPS_URL": "https://ops.example", "FORMULA_OPS_PORT": "9001"}
        with Client.from_env({**env, "FORMULA_OPS_TOKEN": "t"}) as client:
            assert client.base_url == "https://ops.example"

    @pytest.mark.parametrize("port", ["http", "0", "65536", "-1"])
    def test_a_port_that_is_not_one_is_refused(self, port: str) -> None:
        with pytest.raises(ConfigurationError, match="FORMULA_OPS_PORT"):
            Client.from_env({"FORMULA_OPS_PORT": port, "FORMULA_OPS_TOKEN": "t"})


# -- the SSE reader, in-process ------------------------------------------------------------


class _Dropping(httpx.SyncByteStream):
    """Sends ``chunks``, then fails as a connection cut mid-stream does."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.RemoteProtocolError("peer closed connection")


def _frame(seq: int, event: str = "log") -> bytes:
    return f'id: {seq}\nevent: {event}\ndata: {{"n": {seq}}}\n\n'.encode()


SSE = {"content-type": "text/event-stream"}


class TestEventReader:
    def test_a_dropped_stream_resumes_after_the_last_event(self) -> None:
        seen: list[str | None] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers.get("Last-Event-ID"))
            if len(seen) == 1:
                # half a frame after event 2: it must not be dispatched
                stream = _Dropping(b"retry: 10\n\n", _frame(1), _frame(2), b"id: 3\nevent: lo")
                return httpx.Response(200, headers=SSE, stream=stream)
            if len(seen) == 2:
                raise httpx.ConnectError("refused")
            return httpx.Response(200, headers=SSE, content=_frame(3) + _frame(4, "run.finished"))

        sleeps: list[float] = []
        transport = httpx.MockTransport(handler)
        client = Client("http://test", "t", transport=transport, sleep=sleeps.append)
        events = []
        for event in client.events("/v1/runs/r/events"):
            events.append(event)
            if event.event == "run.finished":
                break
        assert [(e.id, e.event, e.json()) for e in events] == [
            ("1", "log", {"n": 1}),
            ("2", "log", {"n": 2}),
            ("3", "log", {"n": 3}),
            ("4", "run.finished", {"n": 4}),
        ]
        assert seen == [None, "2", "2"]
        assert sleeps == [0.01, 0.02]  # the server's retry:, growing with each failure

    def test_retries_are_bounded(self) -> None:
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            raise httpx.ConnectError("refused")

        transport = httpx.MockTransport(handler)
        client = Client("http://test", "t", transport=transport, sleep=lambda _: None)
        with pytest.raises(ConnectionFailed, match="gave up after 3 reconnections"):
            list(client.events("/e", max_retries=3))
        assert calls == 4

    def test_an_error_answer_is_not_retried(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            body = {"type": "/problems/run-not-found", "title": "Run not found", "status": 404}
            return httpx.Response(404, json={**body, "detail": "No run 'x'"})

        client = Client("http://test", "t", transport=httpx.MockTransport(handler))
        with pytest.raises(ApiError) as caught:
            list(client.events("/e"))
        assert (caught.value.status, caught.value.type) == (404, "/problems/run-not-found")
        assert caught.value.message == "Run not found: No run 'x' (404)"
