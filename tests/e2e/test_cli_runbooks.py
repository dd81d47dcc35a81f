"""``formula-ops runbooks list|show`` and ``formula-ops run`` as an operator runs them:
the real executable, output piped, against ``formula-ops serve`` (embedded SQLite and
Redis) loading the shipped catalog and the tests' own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.test_cli_runs import RUN_ID, Server, serve_with_cli
from tests.helpers import RUNBOOKS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    dirs = json.dumps([str(d) for d in RUNBOOKS.catalog_dirs])
    yield from serve_with_cli(
        tmp_path_factory.mktemp("serve"), FORMULA_OPS_RUNBOOKS__CATALOG_DIRS=dirs
    )


def test_list_and_show(server: Server) -> None:
    listed = server.cli("runbooks", "list").stdout
    assert "test-echo" in listed
    assert "maintenance" in listed
    shown = server.cli("runbooks", "show", "test-echo").stdout
    assert "message" in shown
    assert "print the message" in shown
    missing = server.cli("runbooks", "show", "no-such", code=2)
    assert "not found" in (missing.stdout + missing.stderr).lower()


def test_run_waits_and_exits_like_the_run(server: Server) -> None:
    done = server.cli(
        "run",
        "test-echo",
        "--param",
        "message=hello there",
        "-p",
        "count=0",
        "-p",
        "loud=true",
        "--wait",
    )
    assert "success" in done.stdout
    assert "1. print the message:" in done.stdout  # the run's human summary
    assert RUN_ID.search(done.stdout)
    failed = server.cli("run", "test-fails", "--wait", code=1)
    assert "failure" in failed.stdout


def test_run_without_wait_prints_id_and_location(server: Server) -> None:
    queued = server.cli("run", "test-echo", "--param", "message=x").stdout
    assert "Location:" in queued
    run_id = RUN_ID.search(queued)
    assert run_id is not None
    assert server.get(f"/v1/runs/{run_id.group(0)}")["runbook"]["name"] == "test-echo"


def test_dry_run_and_bad_parameters(server: Server) -> None:
    before = len(server.run_ids())
    plan = server.cli("run", "test-echo", "-p", "message=hi", "--dry-run").stdout
    assert "Dry run" in plan
    assert len(server.run_ids()) == before
    for args in (["-p", "count=three"], ["-p", "loud=maybe"], ["-p", "novalue"]):
        server.cli("run", "test-echo", "-p", "message=x", *args, code=2)
    refused = server.cli("run", "test-echo", "-p", "message=x", "-p", "count=9", code=2)
    assert "count" in refused.stdout + refused.stderr
