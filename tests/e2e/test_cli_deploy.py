"""``formula-ops deploy`` and ``formula-ops apply`` as CI and operators run them: the real
executable against ``formula-ops serve`` (embedded SQLite + Redis, the seeded ``local``
environment run by the process driver), on free ports."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from tests.e2e.serve_process import FORMULA_OPS
from tests.e2e.test_cli_runs import Server, sample_ports, serve_with_cli
from tests.helpers import free_port

pytestmark = pytest.mark.slow
DEPLOYMENT_URL = re.compile(r"URL: (http://\S+/v1/deployments/(\S+))")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve_with_cli(tmp_path_factory.mktemp("serve-deploy"), **sample_ports())


def backend_version(server: Server) -> str | None:
    port = server.env["FORMULA_OPS_LOCAL_BACKEND_PORT"]
    try:
        version: str = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).json()["version"]
    except httpx.HTTPError:
        return None
    return version


def test_deploy_roll_back_and_refuse_the_pinned_version(server: Server) -> None:
    ci = {"GITHUB_RUN_ID": "4242"}
    ok = server.cli(
        "deploy", "--env", "local", "--service", "backend", "--version", "1.1.0", "--wait", **ci
    )
    found = DEPLOYMENT_URL.search(ok.stdout)
    assert found, ok.stdout
    assert "success" in ok.stdout
    assert backend_version(server) == "1.1.0"
    first_id = found.group(2)

    retried = server.cli(
        "deploy", "--env", "local", "--service", "backend", "--version", "1.1.0", **ci
    )
    assert "already requested" in retried.stdout
    assert first_id in retried.stdout

    broken = server.cli(
        "deploy",
        "--env",
        "local",
        "--service",
        "backend",
        "--version",
        "1.2.0-broken",
        "--wait",
        code=1,
    )
    assert "rolled_back" in broken.stdout, broken.stdout
    assert backend_version(server) == "1.1.0"
    broken_url = DEPLOYMENT_URL.search(broken.stdout)
    assert broken_url, broken.stdout
    deployment = server.get(f"/v1/deployments/{broken_url.group(2)}")
    assert deployment["status"] == "rolled_back"
    evidence = server.get(f"/v1/deployments/{broken_url.group(2)}/evidence")
    assert evidence["rollback"]["triggered"] is True

    refused = server.cli(
        "deploy", "--env", "local", "--service", "backend", "--version", "1.2.0-broken", code=1
    )
    assert "pinned" in refused.stderr
    assert backend_version(server) == "1.1.0"

    listed = server.get("/v1/deployments", limit=50)["items"]
    assert len(listed) == 2  # the retry and the pinned attempt created nothing


def test_dry_run_and_usage_errors(server: Server) -> None:
    plan = server.cli(
        "deploy", "--env", "local", "--service", "frontend", "--version", "2.0.0", "--dry-run"
    )
    assert "deploy frontend" in plan.stdout
    assert "rollback frontend" in plan.stdout
    server.cli("deploy", "--env", "local", "--service", "frontend", code=2)  # no --version
    server.cli(
        "deploy", "--env", "local", "--service", "x", "--version", "1", code=2, FORMULA_OPS_TOKEN=""
    )


def test_apply_a_declarative_file(server: Server, tmp_path: Path) -> None:
    port = free_port()
    file = tmp_path / "environments.yaml"
    file.write_text(
        f"""
environments:
  - name: staging
    description: pre-production
    required_checklist: [code_review]
    services:
      - name: api
        driver: process
        config:
          command: ["{{python}}", "-m", "app.embedded.sample_service"]
          port: {port}
        health_url: http://127.0.0.1:{port}/health
        settle_seconds: 1
"""
    )
    dry = server.cli("apply", "-f", str(file), "--dry-run")
    assert "+ staging" in dry.stdout
    assert "+ staging/api" in dry.stdout
    with pytest.raises(AssertionError):
        server.get("/v1/environments/staging")
    server.cli("apply", "-f", str(file))
    env = server.get("/v1/environments/staging")
    assert env["required_checklist"] == ["code_review"]
    assert [s["name"] for s in env["services"]] == ["api"]
    assert "No differences" in server.cli("apply", "-f", str(file)).stdout

    file.write_text(file.read_text().replace("settle_seconds: 1", "settle_seconds: 5"))
    changed = server.cli("apply", "-f", str(file))
    assert "~ staging/api" in changed.stdout
    assert "settle_seconds: 1.0 -> 5.0" in changed.stdout
    assert server.get("/v1/environments/staging/services/api")["settle_seconds"] == 5

    text = file.read_text().replace(
        "    services:", "    prometheus_url: http://127.0.0.1:9/\n    services:"
    )
    file.write_text(text + f"        metrics_url: http://127.0.0.1:{port}/metrics\n")
    changed = server.cli("apply", "-f", str(file))
    assert '~ staging\n    prometheus_url: null -> "http://127.0.0.1:9/"' in changed.stdout
    assert "metrics_url: null ->" in changed.stdout
    assert server.get("/v1/environments/staging")["prometheus_url"] == "http://127.0.0.1:9/"
    service = server.get("/v1/environments/staging/services/api")
    assert service["metrics_url"] == f"http://127.0.0.1:{port}/metrics"

    file.write_text("environments: [{name: Bad Name}]")
    bad = server.cli("apply", "-f", str(file), code=2)
    assert "not a valid environments file" in bad.stderr


def test_a_retry_after_a_dropped_connection_gets_the_same_deployment(server: Server) -> None:
    """The first request's connection drops (the client gives up) while the server waits
    for the deployment; the retry with the same key answers that deployment."""
    headers = {
        "Authorization": f"Bearer {server.token}",
        "Idempotency-Key": "ci-pipeline-7-deploy-frontend",
    }
    body = {"environment": "local", "service": "frontend", "version": "3.0.0"}
    before = len(server.get("/v1/deployments", limit=100)["items"])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/v1/deployments",
            json=body,
            headers={**headers, "Prefer": "wait=60"},
            timeout=httpx.Timeout(10, read=0.3),
        )
    retried = httpx.post(f"{server.url}/v1/deployments", json=body, headers=headers, timeout=30)
    assert retried.status_code in (201, 202), retried.text
    assert retried.headers["idempotent-replayed"] == "true"
    deployments = server.get("/v1/deployments", limit=100)["items"]
    assert len(deployments) == before + 1
    assert deployments[0]["id"] == retried.json()["id"]
    done = server.get(f"/v1/deployments/{retried.json()['id']}", wait=60)
    assert done["status"] == "success"


# -- CI output ----------------------------------------------------------------------------

SETTLE_SECONDS = 13  # longer than the heartbeat promise of 10 s
HEARTBEAT_PROMISE = 10.0
# How late a line may arrive past the promise on a loaded machine: process scheduling,
# not the CLI's interval (which is half the promise).
SCHEDULING_SLACK = 2.0


def _put_service(server: Server, name: str, settle_seconds: float = SETTLE_SECONDS) -> None:
    """A sample service that settles ``settle_seconds`` after each deploy."""
    port = free_port()
    body = {
        "driver": "process",
        "config": {"command": ["{python}", "-m", "app.embedded.sample_service"], "port": port},
        "health_url": f"http://127.0.0.1:{port}/health",
        "settle_seconds": settle_seconds,
    }
    response = httpx.put(
        f"{server.url}/v1/environments/local/services/{name}",
        json=body,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text


def _lines_as_they_arrive(server: Server, *args: str) -> tuple[int, list[tuple[float, str]]]:
    """``formula-ops ARGS`` with stdout a pipe (as in CI): its exit code and each stdout
    line with the moment it arrived."""
    process = subprocess.Popen(
        [str(FORMULA_OPS), *args],
        cwd=server.workdir,
        env={**server.env, "FORMULA_OPS_URL": server.url, "FORMULA_OPS_TOKEN": server.token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(180, process.kill)
    watchdog.start()
    try:
        started = time.monotonic()
        assert process.stdout is not None
        lines = [(time.monotonic(), line.rstrip("\n")) for line in process.stdout]
        code = process.wait()
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()
    finally:
        watchdog.cancel()
    return code, [(started, "(started)"), *lines, (time.monotonic(), "(exited)")]


def test_deploy_wait_without_a_terminal_prints_a_line_at_least_every_10_s(
    server: Server,
) -> None:
    _put_service(server, "slow")
    code, lines = _lines_as_they_arrive(
        server, "deploy", "--env", "local", "--service", "slow", "--version", "1.0.0", "--wait"
    )
    text = "\n".join(line for _, line in lines)
    assert code == 0, text
    found = DEPLOYMENT_URL.search(text)
    assert found, text
    deployment = server.get(f"/v1/deployments/{found.group(2)}")
    assert deployment["status"] == "success"
    deploy_step = next(s for s in deployment["steps"] if s["action"] == "deploy")
    took = dt.datetime.fromisoformat(deploy_step["finished_at"]) - dt.datetime.fromisoformat(
        deploy_step["started_at"]
    )
    assert took.total_seconds() >= SETTLE_SECONDS  # the wait this test is about happened

    gaps = [(later - earlier, line) for (earlier, _), (later, line) in pairwise(lines)]
    longest, after = max(gaps)
    assert longest <= HEARTBEAT_PROMISE + SCHEDULING_SLACK, (longest, after, text)
    heartbeats = [line for _, line in lines if "... [2] deploy slow running for " in line]
    assert heartbeats, text
    assert all("since the run started" in line for line in heartbeats), heartbeats
    # every step that ran: its start and its end are one line each
    ran = [step for step in deployment["steps"] if step["started_at"]]
    assert [step["action"] for step in ran][:3] == ["checklist", "pull", "deploy"], ran
    for step in ran:
        label = f"[{step['position']}] {step['name']}"
        starts = [line for _, line in lines if line.endswith(f"{label} ({step['action']}) started")]
        ends = [line for _, line in lines if f"{label}  {step['status']}  " in line]
        assert (len(starts), len(ends)) == (1, 1), (label, text)


def test_a_failed_deploy_says_its_reason_once_with_absolute_links(server: Server) -> None:
    result = server.cli(
        "deploy",
        "--env",
        "local",
        "--service",
        "backend",
        "--version",
        "1.3.0-broken",
        "--checklist",
        "code_review",
        "--wait",
        code=1,
    )
    out = result.stdout
    assert out.count("1.3.0-broken is not healthy") == 1, out
    assert "rolled_back after" in out
    deployment_id = DEPLOYMENT_URL.search(out)
    assert deployment_id, out
    assert f"Evidence: {server.url}/v1/deployments/{deployment_id.group(2)}/evidence" in out
    assert f"URL: {server.url}/v1/deployments/{deployment_id.group(2)}" in out
    checklist = next(line for line in out.splitlines() if "[0] checklist  success" in line)
    assert "passed: 1 of 6 items confirmed" in checklist, checklist
    assert "[ ]" not in checklist
    pull = next(line for line in out.splitlines() if "pull backend  success" in line)
    assert not re.search(r"(\S+) found: \1", pull), pull
    assert "is an executable file" in pull, pull
    # unpinned again for the tests that follow
    server.cli("unpin", "--env", "local", "--service", "backend", "--version", "1.3.0-broken")


def test_a_deployment_failure_is_named_by_its_deployment_problem(server: Server) -> None:
    """The reason line names the problem as the deployment does (``Checklist incomplete``),
    not a generic "Run did not succeed"."""
    response = httpx.put(
        f"{server.url}/v1/environments/gated",
        json={"required_checklist": ["code_review", "security_scan"]},
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text
    port = free_port()
    service = {
        "driver": "process",
        "config": {"command": ["{python}", "-m", "app.embedded.sample_service"], "port": port},
        "health_url": f"http://127.0.0.1:{port}/health",
    }
    response = httpx.put(
        f"{server.url}/v1/environments/gated/services/api",
        json=service,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text
    result = server.cli(
        "deploy", "--env", "gated", "--service", "api", "--version", "1.0.0", "--wait", code=1
    )
    deployment = server.get(f"/v1/deployments/{_deployment_id(result)}")
    assert deployment["failure"]["title"] == "Checklist incomplete", deployment
    reason = next(line for line in result.stdout.splitlines() if " failure after " in line)
    assert reason.startswith("Run "), reason
    assert "Checklist incomplete: " in reason, reason
    assert "Run did not succeed" not in result.stdout


def test_a_replay_shows_the_deployments_real_status(server: Server) -> None:
    args = ("deploy", "--env", "local", "--service", "frontend", "--version", "4.0.0")
    first = server.cli(*args, "--wait", "--idempotency-key", "replay-shows-status")
    assert first.stdout.splitlines()[0].endswith(", queued"), first.stdout
    again = server.cli(*args, "--idempotency-key", "replay-shows-status")
    head = again.stdout.splitlines()[0]
    assert "already requested" in head
    assert head.endswith(", success"), again.stdout


# -- rollback, cancel, unpin, audit list --------------------------------------------------


def _deployment_id(result: subprocess.CompletedProcess[str]) -> str:
    found = DEPLOYMENT_URL.search(result.stdout)
    assert found, result.stdout
    return found.group(2)


def test_rollback_pins_and_unpin_releases(server: Server) -> None:
    deploy = ("deploy", "--env", "local", "--service", "frontend", "--version")
    server.cli(*deploy, "5.0.0", "--wait")
    bad = _deployment_id(server.cli(*deploy, "5.1.0", "--wait"))

    rolled = server.cli("rollback", bad, "--wait")
    rollback_id = _deployment_id(rolled)
    assert rollback_id != bad
    assert f"URL: {server.url}/v1/deployments/{rollback_id}" in rolled.stdout
    assert rolled.stdout.startswith(f"Rollback {rollback_id}: frontend 5.0.0 to local")
    assert rolled.stdout.splitlines()[-2] == "Rollback frontend 5.0.0: success", rolled.stdout
    rollback = server.get(f"/v1/deployments/{rollback_id}")
    assert (rollback["kind"], rollback["rollback_of"], rollback["status"]) == (
        "rollback",
        bad,
        "success",
    )

    refused = server.cli(*deploy, "5.1.0", code=1)
    assert "pinned" in refused.stderr
    hint = "formula-ops unpin --env local --service frontend --version 5.1.0"
    assert f"An operator allows it again with: {hint}" in refused.stderr, refused.stderr
    unpinned = server.cli("unpin", "--env", "local", "--service", "frontend", "--version", "5.1.0")
    assert "Unpinned frontend 5.1.0 in local" in unpinned.stdout
    assert server.get("/v1/environments/local/services/frontend/pins")["items"] == []
    again = server.cli(
        "unpin", "--env", "local", "--service", "frontend", "--version", "5.1.0", code=2
    )
    assert "not pinned" in again.stderr

    _put_service(server, "fresh", settle_seconds=0)
    first = _deployment_id(
        server.cli("deploy", "--env", "local", "--service", "fresh", "--version", "1", "--wait")
    )
    nothing_before = server.cli("rollback", first, code=1)
    assert nothing_before.stderr.startswith("Not rolled back:"), nothing_before.stderr
    unknown = server.cli("rollback", "no-such-deployment", code=2)
    assert "(404)" in unknown.stderr
    server.cli("rollback", code=2)  # usage


def test_cancel_a_running_deployment_and_a_finished_one(server: Server) -> None:
    _put_service(server, "slow-cancel")
    started = server.cli(
        "deploy", "--env", "local", "--service", "slow-cancel", "--version", "1.0.0"
    )
    deployment_id = _deployment_id(started)
    deadline = time.monotonic() + 60
    while server.get(f"/v1/deployments/{deployment_id}")["status"] != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelled = server.cli("cancel", deployment_id)
    assert "cancel requested" in cancelled.stdout
    assert "rolls back what it changed" in cancelled.stdout
    done = server.get(f"/v1/deployments/{deployment_id}", wait=60)
    assert done["status"] == "cancelled", done

    finished = server.cli("cancel", deployment_id, code=1)
    assert finished.stderr.startswith("Not cancelled:"), finished.stderr
    assert "(409)" in finished.stderr
    server.cli("cancel", "no-such-run", code=2)


def test_audit_list_is_tab_separated_and_filters(server: Server) -> None:
    columns = ["seq", "created", "actor", "actor name", "action", "resource", "outcome"]
    _put_service(server, "listed", settle_seconds=0)
    for version in ("1", "2", "3"):  # three creations of its own, whatever ran before
        server.cli("deploy", "--env", "local", "--service", "listed", "--version", version)
    broken = ("deploy", "--env", "local", "--service", "listed", "--version", "4-broken")
    server.cli(*broken, "--wait", code=1)  # rolled back, 4-broken pinned
    server.cli(*broken, code=1)  # refused: pinned
    # Refused creations (version pinned) are deployment.create too, with outcome failed.
    listed = server.cli(
        "audit", "list", "--action", "deployment.create", "--outcome", "success", "--limit", "3"
    )
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert lines[0] == [*columns, "summary"]
    assert len(lines) == 4, listed.stdout
    seqs = [int(cells[0]) for cells in lines[1:]]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    for cells in lines[1:]:
        assert len(cells) == len(columns) + 1, cells
        assert cells[4] == "deployment.create"
        assert cells[5].startswith("deployment/")
        assert cells[6] == "success"
        assert json.loads(cells[7])["environment"] == "local"
    actor = lines[1][2]
    mine = server.cli("audit", "list", "--actor", actor, "--outcome", "success", "--limit", "1000")
    assert all(line.split("\t")[2] == actor for line in mine.stdout.splitlines()[1:])
    refused = server.cli("audit", "list", "--action", "deployment.create", "--outcome", "failed")
    reasons = [json.loads(line.split("\t")[7]) for line in refused.stdout.splitlines()[1:]]
    assert any(r.get("type") == "/problems/version-pinned" for r in reasons), refused.stdout

    future = server.cli("audit", "list", "--since", "2999-01-01T00:00:00Z")
    assert future.stdout.splitlines() == ["\t".join([*columns, "summary"])]
    assert "RFC 3339" in server.cli("audit", "list", "--since", "yesterday", code=2).stderr
    server.cli("audit", "list", "--outcome", "maybe", code=2)
