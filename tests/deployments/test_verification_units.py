"""The arithmetic of post-deployment verification without a deployment: the text
exposition parser, counter resets, the p95 of a histogram's increase, the PromQL
placeholders, the seeded error-rate query as the migrations leave it, and the sample
service's metrics."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from app.core import migrate
from app.core.settings import Settings
from app.deployments import verification
from app.embedded.sample_service import SampleServer
from app.thresholds.defaults import RUNBOOK
from app.thresholds.models import Threshold
from tests.helpers import in_thread

FIRST = b"""# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{service="api",status="200"} 100
http_requests_total{service="api",status="500"} 10
http_request_duration_seconds_bucket{service="api",le="0.1"} 50
http_request_duration_seconds_bucket{service="api",le="1.0"} 100
http_request_duration_seconds_bucket{service="api",le="+Inf"} 110
"""
SECOND = b"""http_requests_total{service="api",status="200"} 180
http_requests_total{service="api",status="500"} 30
http_requests_total{service="api",code="503"} 5
http_request_duration_seconds_bucket{service="api",le="0.1"} 50
http_request_duration_seconds_bucket{service="api",le="1.0"} 180
http_request_duration_seconds_bucket{service="api",le="+Inf"} 210
not a sample line at all {
"""


def test_error_rate_is_the_share_of_5xx_in_the_increase() -> None:
    total, errors = verification._requests(verification.parse(FIRST), verification.parse(SECOND))
    assert (total, errors) == (105.0, 25.0)  # 80 + 20 + 5 (a new series counts from 0)


def test_a_counter_that_went_down_was_reset() -> None:
    restarted = b'http_requests_total{status="200"} 7\nhttp_requests_total{status="500"} 3\n'
    total, errors = verification._requests(verification.parse(FIRST), verification.parse(restarted))
    assert (total, errors) == (10.0, 3.0)


def test_p95_interpolates_in_the_bucket_holding_the_rank() -> None:
    # Increase: le=0.1 -> 0, le=1.0 -> 80, +Inf -> 100; rank 95 lies above 1.0: the
    # highest finite bound, as histogram_quantile answers.
    p95 = verification._p95_ms(verification.parse(FIRST), verification.parse(SECOND))
    assert p95 == 1000.0
    within = b'http_request_duration_seconds_bucket{le="0.1"} 0\n'
    within += b'http_request_duration_seconds_bucket{le="1.0"} 100\n'
    within += b'http_request_duration_seconds_bucket{le="+Inf"} 100\n'
    p95 = verification._p95_ms({}, verification.parse(within))
    assert p95 == pytest.approx(100 + 900 * 0.95)
    assert verification._p95_ms({}, verification.parse(b"")) is None


def test_placeholders_take_validated_names_and_whole_seconds() -> None:
    query = 'rate(x{service="$service",environment="$environment"}[$window])'
    assert (
        verification.promql(query, environment="staging", service="api", window=2.0)
        == 'rate(x{service="api",environment="staging"}[2s])'
    )
    assert verification.window_of(0) == 1.0
    assert verification.window_of(2.2) == 3.0


async def test_names_that_are_not_plain_are_refused() -> None:
    with pytest.raises(ValueError, match="plain names"):
        await verification.verify(
            None,  # type: ignore[arg-type]  # never reached
            {},
            environment="staging",
            service='api"}) or vector(100',
            prometheus_url="http://127.0.0.1:9/",
            metrics_url=None,
            window_seconds=1,
        )


def test_the_migrations_leave_the_seeded_queries_of_the_defaults(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    in_thread(migrate.upgrade, settings)
    expected = {t["name"]: t["prometheus_query"] for t in RUNBOOK if t["prometheus_query"]}
    assert "or vector(0)" in expected["error_rate"]
    assert _queries(settings) == expected
    in_thread(migrate.downgrade, settings, "0010_verify")
    before = _queries(settings)
    assert all('environment="$environment"' not in q for q in before.values()), before
    assert "or vector(0)" in before["error_rate"]
    in_thread(migrate.downgrade, settings, "0009_status")
    assert "or vector(0)" not in _queries(settings)["error_rate"]


def test_a_query_an_administrator_changed_is_left_alone(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    in_thread(migrate.upgrade, settings, "0010_verify")
    _execute(settings, "UPDATE threshold SET prometheus_query = 'up' WHERE name = 'latency_p95'")
    in_thread(migrate.upgrade, settings)
    queries = _queries(settings)
    assert queries["latency_p95"] == "up"
    assert 'environment="$environment"' in queries["error_rate"]


@pytest.mark.parametrize("name", ["error_rate", "latency_p95"])
def test_the_seeded_queries_select_the_environment(name: str) -> None:
    """A Prometheus scraping several environments: staging's figures are staging's."""
    (row,) = [r for r in RUNBOOK if r["name"] == name]
    query = verification.promql(
        row["prometheus_query"], environment="staging", service="backend", window=60
    )
    assert 'environment="staging"' in query, query
    assert 'service="backend"' in query, query
    assert "$" not in query, query


def _queries(settings: Settings) -> dict[str, str]:
    engine = sa.create_engine(settings.database_url_value.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT name, prometheus_query FROM threshold "
                    "WHERE prometheus_query IS NOT NULL"
                )
            )
            return {name: query for name, query in rows}
    finally:
        engine.dispose()


def _execute(settings: Settings, statement: str) -> None:
    engine = sa.create_engine(settings.database_url_value.replace("+aiosqlite", ""))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_the_sample_service_counts_requests_and_fails_one_in_five_of_an_errors_version() -> None:
    server = SampleServer(("127.0.0.1", 0), "api", "1.0.0-errors", environment="qa")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with httpx.Client(trust_env=False, timeout=5) as http:
            codes = [http.get(f"{url}/").status_code for _ in range(20)]
            assert http.get(f"{url}/health").status_code == 200  # never failed, not counted
            metrics = http.get(f"{url}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert codes == [200, 200, 200, 200, 500] * 4
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = verification.parse(metrics.content)
    assert samples["http_requests_total"] == {
        (("environment", "qa"), ("service", "api"), ("status", "200")): 16.0,
        (("environment", "qa"), ("service", "api"), ("status", "500")): 4.0,
    }
    inf = (("environment", "qa"), ("le", "+Inf"), ("service", "api"))
    assert samples["http_request_duration_seconds_bucket"][inf] == 20.0
    total, errors = verification._requests({}, samples)
    assert 100 * errors / total == 20.0


# -- non-finite samples ------------------------------------------------------------------

NAN_SCRAPES = [
    b'http_requests_total{status="200"} 100\nhttp_requests_total{status="500"} 0\n'
    b'http_requests_total{status="200",path="/ping"} 0\n',
    b'http_requests_total{status="200"} 150\nhttp_requests_total{status="500"} 50\n'
    b'http_requests_total{status="200",path="/ping"} NaN\n',
]


@pytest.fixture
async def nan_metrics_url() -> AsyncIterator[str]:
    """A real HTTP server on loopback answering the two scrapes in turn; in the second
    one series reads ``NaN`` (the text format allows it)."""
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        body = NAN_SCRAPES[min(served, len(NAN_SCRAPES) - 1)]
        served += 1
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/metrics"
    server.close()
    await server.wait_closed()


def test_non_finite_samples_are_left_out() -> None:
    samples = verification.parse(b'a{x="1"} NaN\na{x="2"} +Inf\na{x="3"} -Inf\na{x="4"} 2\nb Nan\n')
    assert samples == {"a": {(("x", "4"),): 2.0}}


async def test_a_nan_sample_does_not_hide_a_breach(nan_metrics_url: str) -> None:
    thresholds = {row["name"]: Threshold(**row) for row in RUNBOOK}
    async with httpx.AsyncClient(trust_env=False) as http:
        checked = await verification.verify(
            http,
            thresholds,
            environment="production",
            service="backend",
            prometheus_url=None,
            metrics_url=nan_metrics_url,
            window_seconds=1,
        )
    (rate,) = [m for m in checked.measurements if m.threshold == "error_rate"]
    # 50 of the 100 requests counted in the window answered 5xx; the NaN series is left out.
    assert rate.value == 50.0, rate
    assert rate.grade == "critical", rate
    assert checked.breaches() == [rate]
    json.dumps(checked.as_data(), allow_nan=False)  # the step's data holds no NaN
