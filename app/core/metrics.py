"""Prometheus metrics: HTTP requests by route template and status, runs by kind and status."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """One registry per application, so several apps (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "formula_ops_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "formula_ops_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route template.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.runs = Gauge(
            "formula_ops_runs",
            "Runs in the audit database, by kind and status.",
            ["kind", "status"],
            registry=self.registry,
        )

        self.auth_rate_limited = Counter(
            "formula_ops_auth_rate_limited",
            "Requests refused (429) because their address passed the failed-authentication "
            "limit; the first per address and minute is audited, the rest only counted here.",
            registry=self.registry,
        )

        # -- audit sealing (app.audit.sealer) ------------------------------------------
        self.audit_seal_lag = Gauge(
            "formula_ops_audit_seal_lag_seconds",
            "Age of the oldest committed audit event not yet sealed into the hash chain "
            "(0 when every event is sealed), read from the database at scrape time.",
            registry=self.registry,
        )
        self.audit_seal_delay = Histogram(
            "formula_ops_audit_seal_delay_seconds",
            "From an audit event's creation to its sealing, observed by the process that "
            "sealed it.",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30),
        )
        # -------------------------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def set_run_counts(self, counts: Iterable[tuple[str, str, int]]) -> None:
        """Runs by kind and status, as :func:`app.runs.service.count_by_kind_and_status`
        reads them."""
        self.runs.clear()
        for kind, status, count in counts:
            self.runs.labels(kind, status).set(count)

    def set_audit_seal_lag(self, seconds: float | None) -> None:
        """The age of the oldest unsealed audit event (None: every event is sealed)."""
        self.audit_seal_lag.set(max(0.0, seconds or 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
