"""What an alert-opened incident publishes: its title and public entries name the
components (or the alert's ``summary`` annotation, written for readers), never the
group's labels or the alerts' descriptions, which stay in the internal entries."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import httpx

from app.core.context import AppContext
from tests.alerts.conftest import add_component, post, state
from tests.alerts.payloads import DOCUMENTED
from tests.factories import IssuedToken

DESCRIPTION = "db-primary-7.internal.corp (10.20.30.40) connection pool exhausted"
HOST = "10.20.30.40:9187"
PUBLIC = ("/api/v2/summary.json", "/api/v2/incidents.json", "/status")


def _payload(annotations: dict[str, str]) -> dict[str, Any]:
    body = copy.deepcopy(DOCUMENTED)
    body["groupKey"] = '{}:{alertname="PgPoolExhausted", instance="10.20.30.40:9187"}'
    body["groupLabels"] = {"alertname": "PgPoolExhausted", "instance": HOST}
    body["commonAnnotations"] = {}
    for alert in body["alerts"]:
        alert["labels"] = {
            "alertname": "PgPoolExhausted",
            "instance": HOST,
            "service": "backend",
            "environment": "local",
            "severity": "critical",
        }
        alert["annotations"] = dict(annotations)
    return body


async def test_the_description_annotation_stays_internal(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    started: dt.datetime,
) -> None:
    await add_component(context, "Backend API", ["local/backend"])
    response = await post(client, alerts_token, _payload({"description": DESCRIPTION}))
    assert response.status_code == 200, response.text
    assert response.json()["incident_action"] == "opened"
    for path in PUBLIC:
        page = await client.get(path)
        assert page.status_code == 200
        assert "db-primary-7.internal.corp" not in page.text, path
    found = await state(context, started)
    assert any("db-primary-7.internal.corp" in note for note in found.internal)


async def test_group_labels_are_not_in_the_public_title(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    started: dt.datetime,
) -> None:
    await add_component(context, "Backend API", ["local/backend"])
    response = await post(client, alerts_token, _payload({}))
    assert response.status_code == 200, response.text
    assert response.json()["incident_action"] == "opened"
    for path in PUBLIC:
        page = await client.get(path)
        assert page.status_code == 200
        assert HOST not in page.text, path
        assert "PgPoolExhausted" not in page.text, path
    found = await state(context, started)
    [incident] = found.incidents
    assert incident.title == "Problem affecting Backend API"
    # Operators still find the alert's name and the group's labels, internally.
    [note] = found.internal
    assert "PgPoolExhausted" in note
    assert f"instance={HOST}" in note


async def test_the_summary_annotation_is_the_title(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    started: dt.datetime,
) -> None:
    await add_component(context, "Backend API", ["local/backend"])
    response = await post(client, alerts_token, _payload({"summary": "Backend slow to answer"}))
    assert response.status_code == 200, response.text
    [incident] = (await state(context, started)).incidents
    assert incident.title == "Backend slow to answer"
