"""The arithmetic of post-deployment verification without a deployment: the text
exposition parser, counter resets, the p95 of a histogram's increase, the PromQL
placeholders, the seeded error-rate query as the migrations leave it, and the sample
service's metrics."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from app.core import migrate
from app.core.settings import Settings
from app.deployments import verification
from app.embedded.sample_service import SampleServer
from app.thresholds.defaults import RUNBOOK
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


def test_the_migrations_leave_the_seeded_error_rate_query_of_the_defaults(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path)
    in_thread(migrate.upgrade, settings)
    (expected,) = [t["prometheus_query"] for t in RUNBOOK if t["name"] == "error_rate"]
    assert "or vector(0)" in expected
    assert _error_rate_query(settings) == expected
    in_thread(migrate.downgrade, settings, "0009_status")
    assert "or vector(0)" not in _error_rate_query(settings)


def _error_rate_query(settings: Settings) -> str:
    engine = sa.create_engine(settings.database_url_value.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            query: str = conn.scalar(
                sa.text("SELECT prometheus_query FROM threshold WHERE name = 'error_rate'")
            )
    finally:
        engine.dispose()
    return query


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
