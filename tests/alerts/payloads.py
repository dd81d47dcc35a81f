"""Alertmanager webhook notifications for the tests.

``DOCUMENTED`` follows the notification Alertmanager documents for ``webhook_config``
(docs/configuration.md, "version": "4", field for field, in its order), with values
filled in as Alertmanager 0.25 fills them: Go's zero time as ``endsAt`` of a firing
alert, a 16-hex-digit fingerprint, the groupKey as ``<route matchers>:<group labels>``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

GROUP_KEY = '{}:{alertname="HighErrorRate", service="backend"}'

DOCUMENTED: dict[str, Any] = json.loads(
    """
{
  "version": "4",
  "groupKey": "{}:{alertname=\\"HighErrorRate\\", service=\\"backend\\"}",
  "truncatedAlerts": 0,
  "status": "firing",
  "receiver": "formula-ops",
  "groupLabels": {"alertname": "HighErrorRate", "service": "backend"},
  "commonLabels": {
    "alertname": "HighErrorRate",
    "environment": "local",
    "instance": "127.0.0.1:18081",
    "job": "backend",
    "service": "backend",
    "severity": "critical"
  },
  "commonAnnotations": {
    "summary": "Backend error rate above the runbook's threshold",
    "value": "2.3"
  },
  "externalURL": "http://127.0.0.1:9093",
  "alerts": [
    {
      "status": "firing",
      "labels": {
        "alertname": "HighErrorRate",
        "environment": "local",
        "instance": "127.0.0.1:18081",
        "job": "backend",
        "service": "backend",
        "severity": "critical"
      },
      "annotations": {
        "summary": "Backend error rate above the runbook's threshold",
        "value": "2.3"
      },
      "startsAt": "2026-12-02T14:55:26.739266876Z",
      "endsAt": "0001-01-01T00:00:00Z",
      "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=job%3Abackend_error_rate+%3E+1&g0.tab=1",
      "fingerprint": "3d9f1b0c6e2a4f57"
    }
  ]
}
"""
)


def firing() -> dict[str, Any]:
    return copy.deepcopy(DOCUMENTED)


def resolved() -> dict[str, Any]:
    """The same group once its alert ended, as Alertmanager sends it with
    ``send_resolved: true``."""
    body = firing()
    body["status"] = "resolved"
    for alert in body["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2026-12-02T15:07:41.1Z"
    return body


def group(name: str, *, alerts: int = 1, status: str = "firing", **labels: str) -> dict[str, Any]:
    """A notification of group ``name`` with ``alerts`` alerts carrying ``labels``."""
    common = {"alertname": name, **labels}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "formula-ops",
        "groupLabels": {"alertname": name},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": status,
                "labels": {**common, "instance": f"10.0.0.{i}:9100"},
                "annotations": {"summary": f"{name} on 10.0.0.{i}"},
                "startsAt": "2026-12-02T14:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-02T14:30:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": hashlib.sha256(f"{name}/{i}".encode()).hexdigest()[:16],
            }
            for i in range(alerts)
        ],
    }
