"""The runbook's thresholds of the daily health check, defined once (a service's
latency thresholds are the ``http`` action's defaults, :mod:`app.runs.actions`)."""

from __future__ import annotations

from app.runs.actions import LATENCY_CRITICAL_MS, LATENCY_WARNING_MS

DISK_WARNING_PERCENT = 80
DISK_CRITICAL_PERCENT = 95
MEMORY_WARNING_PERCENT = 85

__all__ = [
    "DISK_CRITICAL_PERCENT",
    "DISK_WARNING_PERCENT",
    "LATENCY_CRITICAL_MS",
    "LATENCY_WARNING_MS",
    "MEMORY_WARNING_PERCENT",
]
