"""Alertmanager repeats a still-firing alert (same group, fingerprint and ``startsAt``)
every ``repeat_interval``. A re-send is not a change: it opens no second incident after
an operator resolved the first, and it does not undo what an operator set (severity).
A new firing (new ``startsAt``, new fingerprint) or a changed severity does."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import httpx

from app.core.context import AppContext
from tests.alerts.conftest import post, state
from tests.alerts.payloads import DOCUMENTED
from tests.factories import IssuedToken


def _firing(
    *, severity: str = "critical", starts_at: str | None = None, fingerprint: str | None = None
) -> dict[str, Any]:
    body = copy.deepcopy(DOCUMENTED)
    body["commonAnnotations"] = {}
    body["commonLabels"]["alertname"] = "BackendSaturated"  # no threshold: the label decides
    body["commonLabels"]["severity"] = severity
    for alert in body["alerts"]:
        alert["labels"]["alertname"] = "BackendSaturated"
        alert["labels"]["severity"] = severity
        alert["annotations"] = {}
        if starts_at is not None:
            alert["startsAt"] = starts_at
        if fingerprint is not None:
            alert["fingerprint"] = fingerprint
    return body


async def _resolve(client: httpx.AsyncClient, admin: IssuedToken, incident_id: str) -> None:
    resolved = await client.post(
        f"/v1/incidents/{incident_id}/resolve", json={}, headers=admin.headers
    )
    assert resolved.status_code == 200, resolved.text


async def test_a_resend_after_manual_resolution_opens_no_second_incident(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    alerts_token: IssuedToken,
    backend_api: str,
    started: dt.datetime,
) -> None:
    first = await post(client, alerts_token, copy.deepcopy(DOCUMENTED))
    incident_id = first.json()["incident_id"]
    await _resolve(client, admin, incident_id)

    again = await post(client, alerts_token, copy.deepcopy(DOCUMENTED))  # the same re-send
    assert again.status_code == 200, again.text
    assert again.json()["incident_action"] == "none", again.json()
    found = await state(context, started)
    assert [i.id for i in found.incidents] == [incident_id]
    assert found.incidents[0].status == "resolved"
    assert found.component_status[backend_api] == "operational"
    [alert] = found.alerts
    assert (alert.incident_id, alert.received_count) == (incident_id, 2)


async def test_a_new_firing_after_manual_resolution_opens_a_new_incident(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    alerts_token: IssuedToken,
    backend_api: str,
    started: dt.datetime,
) -> None:
    first = await post(client, alerts_token, _firing())
    await _resolve(client, admin, first.json()["incident_id"])

    refired = await post(client, alerts_token, _firing(starts_at="2026-12-02T16:01:00Z"))
    assert refired.json()["incident_action"] == "opened", refired.json()
    other = await post(client, alerts_token, _firing(fingerprint="0123456789abcdef"))
    assert other.json()["incident_action"] == "updated", other.json()
    assert other.json()["incident_id"] == refired.json()["incident_id"]
    found = await state(context, started)
    assert len(found.incidents) == 2
    assert found.component_status[backend_api] == "partial_outage"


async def test_a_resend_keeps_the_operators_severity(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    alerts_token: IssuedToken,
    backend_api: str,
    started: dt.datetime,
) -> None:
    first = await post(client, alerts_token, _firing())
    path = f"/v1/incidents/{first.json()['incident_id']}"
    opened = await client.get(path, headers=admin.headers)
    assert opened.json()["severity"] == "P1"
    lowered = await client.patch(
        path,
        json={"severity": "P3"},
        headers={**admin.headers, "If-Match": opened.headers["ETag"]},
    )
    assert lowered.status_code == 200, lowered.text
    before = await state(context, started)

    again = await post(client, alerts_token, _firing())  # the same alert, re-sent
    assert again.status_code == 200, again.text
    assert again.json()["incident_action"] == "updated"
    after = (await client.get(path, headers=admin.headers)).json()
    assert after["severity"] == "P3"
    assert (await state(context, started)).public == before.public  # nothing published

    # The alert itself changes (warning, then critical again): that may raise it.
    await post(client, alerts_token, _firing(severity="warning"))
    assert (await client.get(path, headers=admin.headers)).json()["severity"] == "P2"
    await post(client, alerts_token, _firing(severity="critical"))
    assert (await client.get(path, headers=admin.headers)).json()["severity"] == "P1"
