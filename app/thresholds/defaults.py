"""The runbook's "Monitoring and Alerts" thresholds, as the migration that creates the
table seeds them (that migration keeps its own copy: a migration never changes), with
the error-rate query as migration 0010 corrects it and both queries selecting the
environment as well as the service (migration 0011), and the backup ages (migration
0012)."""

from __future__ import annotations

from typing import Any

RUNBOOK: tuple[dict[str, Any], ...] = (
    {
        "name": "error_rate",
        "title": "Error rate",
        "description": "Share of requests answered 5xx over the window.",
        "unit": "percent",
        "warning": 1.0,
        "critical": 5.0,
        "alert_names": ["HighErrorRate", "ErrorRateHigh"],
        # No 5xx series in the window counts as 0 (not "no data"); no request at all
        # is 0/0, not measured.
        "prometheus_query": (
            "100 * (sum(rate(http_requests_total"
            '{service="$service",environment="$environment",status=~"5.."}[$window]))'
            " or vector(0))"
            ' / sum(rate(http_requests_total{service="$service",environment="$environment"}'
            "[$window]))"
        ),
    },
    {
        "name": "latency_p95",
        "title": "Response time (p95)",
        "description": "95th percentile of request duration.",
        "unit": "milliseconds",
        "warning": 1000.0,
        "critical": 2000.0,
        "alert_names": ["HighLatency", "HighResponseTime"],
        "prometheus_query": (
            "1000 * histogram_quantile(0.95, sum by (le) "
            "(rate(http_request_duration_seconds_bucket"
            '{service="$service",environment="$environment"}[$window])))'
        ),
    },
    {
        "name": "cpu",
        "title": "CPU usage",
        "description": "Share of CPU in use.",
        "unit": "percent",
        "warning": 80.0,
        "critical": None,
        "alert_names": ["HighCpuUsage", "HighCPUUsage"],
        "prometheus_query": None,
    },
    {
        "name": "memory",
        "title": "Memory usage",
        "description": "Share of memory in use.",
        "unit": "percent",
        "warning": 85.0,
        "critical": None,
        "alert_names": ["HighMemoryUsage"],
        "prometheus_query": None,
    },
    {
        "name": "disk",
        "title": "Disk usage",
        "description": "Share of disk space in use.",
        "unit": "percent",
        "warning": 80.0,
        "critical": 95.0,
        "alert_names": ["DiskSpaceLow", "HighDiskUsage"],
        "prometheus_query": None,
    },
    # Added with backups (migration 0012): the runbook backs up daily, so a day and a
    # bit is late and two days is an outage of the safety net; drills are weekly.
    {
        "name": "backup_age",
        "title": "Age of the newest backup",
        "description": "Hours since the newest successful backup of a database.",
        "unit": "hours",
        "warning": 26.0,
        "critical": 48.0,
        "alert_names": [],
        "prometheus_query": None,
    },
    {
        "name": "backup_verified_age",
        "title": "Age of the newest verified backup",
        "description": "Hours since the newest backup that passed a restore drill was taken.",
        "unit": "hours",
        "warning": 192.0,
        "critical": 360.0,
        "alert_names": [],
        "prometheus_query": None,
    },
)
