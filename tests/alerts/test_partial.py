"""Alerts of one group that concern several components: a maintenance window holds back
only the components it covers, and an alert that resolves while others of its group
still fire gives its component back."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import httpx

from app.core.context import AppContext
from tests.alerts.conftest import add_component, add_window, post, state
from tests.alerts.payloads import DOCUMENTED
from tests.factories import IssuedToken


async def test_a_window_on_one_component_does_not_silence_another(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    started: dt.datetime,
) -> None:
    """An alert naming the service without an environment concerns production and
    staging; a window on staging holds back staging only."""
    production = await add_component(context, "Backend (production)", ["production/backend"])
    staging = await add_component(context, "Backend (staging)", ["staging/backend"])
    window = await add_window(context, [staging])

    body = copy.deepcopy(DOCUMENTED)
    body["commonLabels"] = {}
    for alert in body["alerts"]:
        alert["labels"] = {"alertname": "BackendDown", "service": "backend", "severity": "critical"}
    response = await post(client, alerts_token, body)
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt["incident_action"] == "opened", receipt
    assert receipt["suppressed"] == 0
    found = await state(context, started)
    assert found.component_status[production] == "partial_outage"
    # The incident does not claim staging (the window, inserted as rows here, claims
    # nothing either: its lifecycle does that).
    assert found.component_status[staging] == "operational"
    [alert] = found.alerts
    assert (alert.incident_id, alert.suppressed_by) == (receipt["incident_id"], window)

    # Every component in a window: held back whole, as before.
    only_staging = copy.deepcopy(body)
    only_staging["groupKey"] = '{}:{alertname="BackendDown", environment="staging"}'
    for alert in only_staging["alerts"]:
        alert["labels"]["environment"] = "staging"
    held = await post(client, alerts_token, only_staging)
    assert (held.json()["incident_action"], held.json()["suppressed"]) == ("none", 1)


def _notification(database_status: str) -> dict[str, Any]:
    body = copy.deepcopy(DOCUMENTED)
    body["commonLabels"] = {"severity": "critical"}
    body["commonAnnotations"] = {}
    backend = copy.deepcopy(body["alerts"][0])
    backend["labels"] = {"alertname": "Down", "component": "Backend API", "severity": "critical"}
    backend["fingerprint"] = "aaaaaaaaaaaaaaaa"
    database = copy.deepcopy(backend)
    database["labels"] = {"alertname": "Down", "component": "Database", "severity": "critical"}
    database["fingerprint"] = "bbbbbbbbbbbbbbbb"
    database["status"] = database_status
    if database_status == "resolved":
        database["endsAt"] = "2026-12-02T15:00:00Z"
    body["alerts"] = [backend, database]
    return body


async def test_a_resolved_alert_restores_its_component(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    started: dt.datetime,
) -> None:
    backend = await add_component(context, "Backend API", [])
    database = await add_component(context, "Database", [])
    first = await post(client, alerts_token, _notification("firing"))
    assert first.json()["incident_action"] == "opened", first.text
    during = await state(context, started)
    assert during.component_status[database] == "partial_outage"

    second = await post(client, alerts_token, _notification("resolved"))
    assert second.status_code == 200, second.text
    assert second.json()["incident_action"] == "updated"
    once = await state(context, started)
    assert once.component_status[backend] == "partial_outage"
    assert once.component_status[database] == "operational"
    assert once.incidents[0].status == "investigating"
    assert once.public[-1] == "Database has recovered; we continue to investigate."

    again = await post(client, alerts_token, _notification("resolved"))  # re-sent
    assert again.status_code == 200, again.text
    after = await state(context, started)
    assert after.public == once.public
    assert after.component_status == once.component_status
