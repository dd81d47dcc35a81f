"""``/metrics`` with several processes: ``formula-ops api --workers 2`` and ``formula-ops
worker --processes 2`` on one state directory (PostgreSQL, Redis), as real subprocesses.
Whichever API process answers a scrape, it reports the sums over all four processes:
the HTTP requests both API processes answered and the runs both worker processes ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app.core.context import AppContext
from app.core.settings import Settings
from app.runs import service as run_service
from app.runs.models import RunStatus
from tests.e2e.test_worker_processes import (
    FORMULA_OPS,
    Supervisor,
    claiming_pids,
    create_runs,
    wait_finished,
)
from tests.helpers import free_port
from workers.main import cron_jobs

pytestmark = pytest.mark.slow
RUNS = 6
PROBES = 40
SCRAPES = 6


@pytest.fixture(scope="module")
def settings(worker_settings: Settings) -> Settings:
    """The processes' settings (PostgreSQL, the shared Redis under a prefix of their own)."""
    return worker_settings


class Api:
    """``formula-ops api --workers N`` on a free port, logging to a file."""

    def __init__(self, settings: Settings, workdir: Path, workers: int) -> None:
        assert settings.database_url is not None
        assert settings.redis_url is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
        env |= {
            "FORMULA_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
            "FORMULA_OPS_REDIS_URL": settings.redis_url.get_secret_value(),
            "FORMULA_OPS_QUEUE_NAME": settings.queue_name,
            "FORMULA_OPS_REDIS_PREFIX": settings.redis_prefix,
            "FORMULA_OPS_STATE_DIR": str(settings.state_dir),
        }
        self.log_path = workdir / "api.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(FORMULA_OPS), "api", "--port", str(self.port), "--workers", str(workers)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, workers: int, within: float = 60) -> None:
        """Until every worker process has started (uvicorn says so per process)."""
        deadline = time.monotonic() + within
        while self.output().count("Application startup complete") < workers:
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()[-4000:]
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@pytest.fixture
def supervisor(settings: Settings, tmp_path: Path) -> Iterator[Supervisor]:
    started = Supervisor(settings, tmp_path, processes=2)
    yield started
    started.kill_all()


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[Api]:
    started = Api(settings, tmp_path, workers=2)
    yield started
    started.stop()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def per_process(directory: Path, name: str, **labels: str) -> dict[int, float]:
    """A counter's value in each process's file (``counter_<pid>.db``)."""
    found = {}
    for path in directory.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
            for sample in metric.samples:
                wanted = {k: sample.labels.get(k) for k in labels}
                if sample.name == name and wanted == labels and sample.value:
                    found[int(path.stem.split("_")[1])] = sample.value
    return found


async def test_every_scrape_sums_the_api_and_worker_processes(
    settings: Settings, supervisor: Supervisor, api: Api, app_context: AppContext
) -> None:
    workers = await supervisor.wait_started()
    api.wait_healthy(workers=2)

    run_ids = await create_runs(app_context, RUNS)
    statuses = await wait_finished(app_context, run_ids, supervisor)
    assert set(statuses.values()) == {RunStatus.SUCCESS.value}, statuses
    assert set((await claiming_pids(app_context, run_ids)).values()) == workers

    # A new connection per request: either API process may take it.
    fresh = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=10)
    async with fresh:
        for _ in range(PROBES):
            assert (await fresh.get(f"{api.url}/health")).status_code == 200

    directory = settings.state_dir / "metrics"
    health = {"method": "GET", "route": "/health", "status": "200"}
    by_api_process = per_process(directory, "formula_ops_http_requests_total", **health)
    by_worker_process = per_process(
        directory, "formula_ops_runs_finished_total", kind="maintenance", status="success"
    )
    assert set(by_worker_process) == workers, by_worker_process
    assert sum(by_api_process.values()) == PROBES, by_api_process

    async with app_context.sessionmaker() as session:
        counts = await run_service.count_by_kind_and_status(session)
    in_db = next(n for kind, status, n in counts if (kind, status) == ("maintenance", "success"))
    assert in_db >= RUNS
    for _ in range(SCRAPES):
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{api.url}/metrics")
        assert response.status_code == 200
        assert "_created" not in response.text
        found = samples(response.text)
        assert value(found, "formula_ops_http_requests_total", **health) == PROBES
        assert (
            value(found, "formula_ops_runs_finished_total", kind="maintenance", status="success")
            == RUNS
        )
        assert value(found, "formula_ops_run_duration_seconds_count", kind="maintenance") == RUNS
        # No run waits; only periodic jobs due this very moment may (at most one of each).
        assert value(found, "formula_ops_queue_depth") <= len(cron_jobs(settings))
        assert value(found, "formula_ops_metrics_source_up", source="redis") == 1
        # Read from the database (which other tests of this session share).
        assert value(found, "formula_ops_runs", kind="maintenance", status="success") == in_db
    # Production commands log JSON by default: one object per line, from every process.
    for output in (api.output(), supervisor.output()):
        entries = [json.loads(line) for line in output.splitlines()]
        assert entries
        assert all(isinstance(e, dict) and e["level"] for e in entries)
    children = {e.get("pid") for e in map(json.loads, api.output().splitlines())} - {None}
    assert len(children) >= 2, api.output()[-2000:]

    # Both API processes keep their own counters (files), which every scrape sums.
    api_pids = {int(path.stem.split("_")[1]) for path in directory.glob("counter_*.db")}
    assert len(api_pids - workers) >= 2, (api_pids, workers)
