"""``load_probe``: a bounded burst of GETs of a service's health URL (from its row, never
from the caller) against a real HTTP server on 127.0.0.1, graded by the thresholds
table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from app.core.context import AppContext
from app.runbooks.actions.load import LoadProbeParams, load_probe, percentile
from app.runs.models import Level, StepStatus
from app.thresholds.models import Threshold
from tests.runbook_actions.helpers import add_environment, step_context

pytestmark = pytest.mark.one_backend("postgres")


class _Target(BaseHTTPRequestHandler):
    """/health 200; /broken 500; /flaky 500 on every tenth request; /slow after 1 s."""

    protocol_version = "HTTP/1.1"
    lock = threading.Lock()
    flaky = 0

    def do_GET(self) -> None:
        status = 200
        if self.path == "/broken":
            status = 500
        elif self.path == "/flaky":
            with self.lock:
                type(self).flaky += 1
                status = 500 if type(self).flaky % 10 == 0 else 200
        elif self.path == "/slow":
            threading.Event().wait(1.0)
        body = b'{"status":"ok"}'
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def probe(**changes: Any) -> LoadProbeParams:
    return LoadProbeParams.model_validate({"environment": "prod", "service": "api", **changes})


class TestProbe:
    async def test_a_healthy_service(self, context: AppContext, target: str) -> None:
        await add_environment(context, health_url=f"{target}/health")
        ctx, _ = step_context(context)
        outcome = await load_probe(probe(requests=60, concurrency=4), ctx)
        assert (outcome.status, outcome.level) == (StepStatus.SUCCESS, Level.OK)
        data = outcome.data
        assert (data["completed"], data["error_rate_percent"]) == (60, 0.0)
        assert data["statuses"] == {"200": 60}
        latency = data["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["max"] < 1000
        assert data["requests_per_second"] > 0
        assert data["stopped_at_max_seconds"] is False

    async def test_a_service_answering_500_is_critical(
        self, context: AppContext, target: str
    ) -> None:
        await add_environment(context, health_url=f"{target}/broken")
        ctx, _ = step_context(context)
        outcome = await load_probe(probe(requests=20), ctx)
        assert (outcome.status, outcome.level) == (StepStatus.FAILURE, Level.CRITICAL)
        assert outcome.data["error_rate_percent"] == 100.0
        assert outcome.data["statuses"] == {"500": 20}

    async def test_ten_percent_errors_is_critical_one_percent_a_warning(
        self, context: AppContext, target: str
    ) -> None:
        _Target.flaky = 0
        await add_environment(context, health_url=f"{target}/flaky")
        ctx, _ = step_context(context)
        outcome = await load_probe(probe(requests=50, concurrency=5), ctx)
        assert outcome.data["error_rate_percent"] == 10.0
        assert outcome.level == Level.CRITICAL
        async with context.unit_of_work() as uow:
            await uow.session.execute(
                update(Threshold).where(Threshold.name == "error_rate").values(critical=20.0)
            )
        _Target.flaky = 0
        outcome = await load_probe(probe(requests=50, concurrency=5), ctx)
        assert (outcome.status, outcome.level) == (StepStatus.SUCCESS, Level.WARNING)
        assert outcome.data["levels"]["error_rate"] == {"warning": 1.0, "critical": 20.0}

    async def test_latency_is_graded_by_the_thresholds_table(
        self, context: AppContext, target: str
    ) -> None:
        async with context.unit_of_work() as uow:
            await uow.session.execute(
                update(Threshold).where(Threshold.name == "latency_p95").values(warning=0.001)
            )
        await add_environment(context, health_url=f"{target}/health")
        ctx, _ = step_context(context)
        outcome = await load_probe(probe(requests=10), ctx)
        assert (outcome.status, outcome.level) == (StepStatus.SUCCESS, Level.WARNING)

    async def test_the_probe_stops_at_max_seconds(self, context: AppContext, target: str) -> None:
        await add_environment(context, health_url=f"{target}/slow")
        ctx, _ = step_context(context)
        outcome = await load_probe(probe(requests=50, concurrency=2, max_seconds=0.5), ctx)
        assert outcome.data["stopped_at_max_seconds"] is True
        assert outcome.data["completed"] == 0
        assert outcome.data["seconds"] < 1.0
        assert (outcome.status, outcome.level) == (StepStatus.FAILURE, Level.CRITICAL)


class TestTarget:
    async def test_a_service_without_health_url_fails(self, context: AppContext) -> None:
        await add_environment(context)
        ctx, _ = step_context(context)
        outcome = await load_probe(probe(), ctx)
        assert outcome.status == StepStatus.FAILURE
        assert "no health URL" in (outcome.error or "")

    async def test_an_unknown_service_fails(self, context: AppContext) -> None:
        ctx, _ = step_context(context)
        outcome = await load_probe(probe(service="ghost"), ctx)
        assert outcome.status == StepStatus.FAILURE

    @pytest.mark.parametrize(
        "changes",
        [
            {"requests": 1001},
            {"concurrency": 21},
            {"max_seconds": 121},
            {"url": "http://127.0.0.1/"},
            {"service": "http://evil"},
        ],
    )
    def test_bounds_and_no_url_from_the_caller(self, changes: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            probe(**changes)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (50.0, 95.0)
    assert percentile([7.0], 0.95) == 7.0
