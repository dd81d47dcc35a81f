"""An operator follows one run in the logs and in ``/metrics``: ``formula-ops serve`` with
``FORMULA_OPS_LOG_FORMAT=json``, one ``formula-ops deploy --wait`` to the seeded
``local`` environment. Every line of the run is one JSON object carrying its
``run_id``; its lifecycle is logged at INFO; ``/metrics`` shows it in the run, duration
and deployment series, without ``_created`` series."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_cli_runs import Server, sample_ports, serve_with_cli

pytestmark = pytest.mark.slow
DEPLOYMENT_URL = re.compile(r"URL: http://\S+/v1/deployments/(\S+)")
ANNOUNCEMENT = re.compile(r"^Formula Ops is serving on http://\S+$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve_with_cli(
        tmp_path_factory.mktemp("serve-json-logs"),
        FORMULA_OPS_LOG_FORMAT="json",
        **sample_ports(),
    )


class Deployed:
    def __init__(self, run_id: str, entries: list[dict[str, Any]], metrics: str) -> None:
        self.run_id = run_id
        self.entries = entries
        self.metrics = metrics

    def of_run(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("run_id") == self.run_id]

    def event(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.of_run() if e.get("event") == name]


@pytest.fixture(scope="module")
def deployed(server: Server) -> Deployed:
    before = len(server.output().splitlines())
    result = server.cli(
        "deploy", "--env", "local", "--service", "backend", "--version", "1.1.0", "--wait"
    )
    found = DEPLOYMENT_URL.search(result.stdout)
    assert found, result.stdout
    run_id = found.group(1)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    entries = []
    for line in server.output().splitlines()[before:]:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line!r}") from None
        assert isinstance(entry, dict), line
        entries.append(entry)
    return Deployed(run_id, entries, metrics)


def test_every_line_before_the_run_is_json_too(server: Server) -> None:
    lines = server.output().splitlines()
    assert lines
    for line in lines:
        if ANNOUNCEMENT.match(line):  # printed for the operator, not logged
            continue
        assert isinstance(json.loads(line), dict), line


def test_the_run_is_logged_from_queued_to_finished(deployed: Deployed) -> None:
    queued = deployed.event("run.queued")
    assert len(queued) == 1, deployed.of_run()
    # The API's line: which request created it, and by whom (a token id, not the token).
    assert queued[0]["request_id"]
    assert re.fullmatch(r"token:[0-9a-z]{16}", queued[0]["actor"]), queued[0]
    assert queued[0]["kind"] == "deployment"

    claimed = deployed.event("run.claimed")
    assert len(claimed) == 1
    assert claimed[0]["level"] == "INFO"
    assert claimed[0]["actor"] == queued[0]["actor"]

    started = deployed.event("step.started")
    ended = deployed.event("step.finished")
    assert started
    assert [e["step"] for e in started] == [e["step"] for e in ended]
    assert {e["action"] for e in started} >= {"pull", "deploy", "verify"}
    for entry in ended:
        assert entry["status"] == "success", entry
        assert entry["duration_ms"] >= 0

    finished = deployed.event("run.finished")
    assert len(finished) == 1
    assert finished[0]["status"] == "success"
    assert finished[0]["duration_ms"] > 0
    for entry in [*started, *ended, *finished, *claimed, *queued]:
        assert entry["level"] == "INFO"
        assert entry["kind"] == "deployment"


def test_every_line_the_worker_logged_for_the_run_carries_its_id(deployed: Deployed) -> None:
    """From its claim to its end, every line not about an HTTP request (the CLI's
    polling, the probes) belongs to the run."""
    first = deployed.entries.index(deployed.event("run.claimed")[0])
    last = deployed.entries.index(deployed.event("run.finished")[0])
    during = deployed.entries[first : last + 1]
    assert len(during) >= 8
    for entry in during:
        if entry["logger"] == "app.requests":
            assert entry["request_id"], entry
            continue
        assert entry.get("run_id") == deployed.run_id, entry
        assert entry.get("kind") == "deployment", entry
    steps = [e for e in during if e.get("event", "").startswith("step.")]
    assert all(e.get("step") for e in steps)


def test_the_requests_are_logged_with_their_actor(deployed: Deployed) -> None:
    requests = [e for e in deployed.entries if e["logger"] == "app.requests"]
    created = [e for e in requests if e["message"].startswith("POST /v1/deployments ")]
    assert len(created) == 1, requests
    queued = deployed.event("run.queued")[0]
    assert created[0]["request_id"] == queued["request_id"]
    assert created[0]["actor"] == queued["actor"]
    assert created[0]["status"] == 202


def test_no_probe_is_logged_at_info(deployed: Deployed) -> None:
    assert not [e for e in deployed.entries if e["logger"] in ("httpx", "httpcore")]
    assert not [e for e in deployed.entries if "HTTP Request:" in e["message"]]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_show_the_run(deployed: Deployed) -> None:
    found = _samples(deployed.metrics)

    def value(name: str, **labels: str) -> float | None:
        return found.get((name, frozenset(labels.items())))

    assert value("formula_ops_runs_finished_total", kind="deployment", status="success") == 1
    assert value("formula_ops_run_duration_seconds_count", kind="deployment") == 1
    duration = value("formula_ops_run_duration_seconds_sum", kind="deployment")
    assert duration is not None
    assert duration > 0
    assert (
        value(
            "formula_ops_deployments_total",
            kind="deployment",
            environment="local",
            outcome="success",
        )
        == 1
    )
    assert value("formula_ops_runs", kind="deployment", status="success") == 1
    # Read from Redis at the scrape: periodic jobs (the reconciler, schedules,
    # maintenances, incident clocks, webhook batches) may be due and not yet taken, more
    # of them on a slow host; no run of the deployment's is among them (runs below).
    depth = value("formula_ops_queue_depth")
    assert depth is not None
    assert depth >= 0
    assert depth == int(depth)
    assert value("formula_ops_runs", kind="deployment", status="queued") in (None, 0)
    assert value("formula_ops_metrics_source_up", source="database") == 1
    assert value("formula_ops_metrics_source_up", source="redis") == 1
    assert "_created" not in deployed.metrics
