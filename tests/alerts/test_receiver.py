"""``POST /v1/alerts/alertmanager``: the issue's acceptance 1 (Alertmanager's documented
notification, firing then resolved, each sent twice → one incident, severity by
threshold, component degraded then restored), concurrency, suppression by a
maintenance window, severities, authorisation and bad input."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
from sqlalchemy import update

from app.auth.roles import Role
from app.core.context import AppContext
from app.thresholds.models import Threshold
from tests.alerts import payloads
from tests.alerts.conftest import RECEIVER, add_component, add_window, post, state
from tests.factories import IssuedToken, app_with, issue_token


async def test_documented_notification_firing_then_resolved_each_twice(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    backend_api: str,
    started: dt.datetime,
) -> None:
    """Acceptance 1. The alert's `severity` label says critical (P1 by itself); its value
    2.3 % grades to the error-rate threshold's warning level, so the incident is P2 and
    Backend API (local/backend) shows degraded_performance until the group resolves."""
    first = await post(client, alerts_token, payloads.firing())
    assert first.status_code == 200, first.text
    opened = await state(context, started)
    second = await post(client, alerts_token, payloads.firing())
    assert second.status_code == 200, second.text
    assert first.json()["incident_action"] == "opened"
    assert first.json()["incident_created"] is True
    assert second.json()["incident_action"] == "updated"
    assert second.json()["incident_created"] is False
    assert first.json()["incident_id"] == second.json()["incident_id"]
    assert (first.json()["new_alerts"], second.json()["new_alerts"]) == (1, 0)

    during = await state(context, started)
    assert len(during.incidents) == 1
    incident = during.incidents[0]
    assert incident.id == first.json()["incident_id"]
    assert incident.severity == "P2"
    assert incident.source == "alertmanager"
    assert incident.status == "investigating"
    assert incident.title == "Backend error rate above the runbook's threshold"
    assert during.component_status[backend_api] == "degraded_performance"
    assert during.updates == opened.updates == 1  # the re-send added nothing
    [alert] = during.alerts
    assert (alert.threshold, alert.severity, alert.received_count) == ("error_rate", "P2", 2)
    assert alert.incident_id == incident.id
    assert alert.suppressed_by is None
    assert alert.ends_at is None  # Go's zero time

    resolved = await post(client, alerts_token, payloads.resolved())
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["incident_action"] == "resolved"
    assert resolved.json()["incident_id"] == incident.id
    once = await state(context, started)
    again = await post(client, alerts_token, payloads.resolved())
    assert again.status_code == 200, again.text

    after = await state(context, started)
    assert len(after.incidents) == 1
    assert after.incidents[0].status == "monitoring"
    assert after.component_status[backend_api] == "operational"
    [alert] = after.alerts
    assert (alert.status, alert.received_count) == ("resolved", 4)
    assert alert.ends_at == dt.datetime(2026, 12, 2, 15, 7, 41, 100000, tzinfo=dt.UTC)
    assert after.updates == once.updates == 2  # the resolution, once
    assert after.receipts == 4  # one audit record per notification
    # Readers of the status page see the component, never the alert's name, labels,
    # severity or threshold; operators find those in the internal entries.
    assert after.public == [
        "We are investigating a problem affecting Backend API.",
        "The problem affecting Backend API has cleared; we are monitoring.",
    ]
    assert len(after.internal) == 2
    assert "HighErrorRate" in after.internal[0]
    assert "error_rate" in after.internal[0]
    summary = (await client.get("/api/v2/summary.json")).text
    for internal in ("HighErrorRate", "error_rate", "P2", "severity", "Alertmanager"):
        assert internal not in summary


async def test_two_copies_at_once_open_one_incident(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    backend_api: str,
    started: dt.datetime,
) -> None:
    answers = await asyncio.gather(
        *(post(client, alerts_token, payloads.firing()) for _ in range(2))
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert sorted(a.json()["incident_action"] for a in answers) == ["opened", "updated"]
    assert len({a.json()["incident_id"] for a in answers}) == 1
    found = await state(context, started)
    assert len(found.incidents) == 1
    assert [a.received_count for a in found.alerts] == [2]
    assert found.updates == 1

    # And a burst of copies of a second group beside re-sends of the first.
    other = payloads.group("NodeDown", alerts=3, service="backend", severity="critical")
    answers = await asyncio.gather(
        *(post(client, alerts_token, body) for body in [other] * 4 + [payloads.firing()] * 2)
    )
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    found = await state(context, started)
    assert len(found.incidents) == 2
    assert sorted(a.received_count for a in found.alerts) == [4, 4, 4, 4]
    assert found.component_status[backend_api] == "partial_outage"


async def test_a_maintenance_window_suppresses_the_incident(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    backend_api: str,
    started: dt.datetime,
) -> None:
    window = await add_window(context, [backend_api])
    answer = await post(client, alerts_token, payloads.firing())
    assert answer.status_code == 200, answer.text
    receipt = answer.json()
    assert receipt["incident_action"] == "none"
    assert receipt["incident_id"] is None
    assert (receipt["suppressed"], receipt["suppressed_by"]) == (1, [window])
    found = await state(context, started)
    assert found.incidents == []
    [alert] = found.alerts
    assert alert.suppressed_by == window
    assert alert.incident_id is None
    assert found.receipts == 1


async def test_a_window_on_another_component_suppresses_nothing(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    backend_api: str,
    started: dt.datetime,
) -> None:
    database = await add_component(context, "Database", [])
    await add_window(context, [database])
    answer = await post(client, alerts_token, payloads.firing())
    assert answer.json()["incident_action"] == "opened"
    assert answer.json()["suppressed"] == 0


async def test_resolved_without_an_incident_does_nothing(
    client: httpx.AsyncClient, context: AppContext, alerts_token: IssuedToken, started: dt.datetime
) -> None:
    answer = await post(client, alerts_token, payloads.resolved())
    assert answer.status_code == 200, answer.text
    assert answer.json()["incident_action"] == "none"
    found = await state(context, started)
    assert found.incidents == []
    assert len(found.alerts) == 1


async def test_severity_from_the_label_without_a_threshold(
    client: httpx.AsyncClient, context: AppContext, alerts_token: IssuedToken, started: dt.datetime
) -> None:
    for name, label, _severity in (
        ("NodeDown", "critical", "P1"),
        ("QueueSlow", "warning", "P2"),
        ("CertExpiring", "info", "P3"),
        ("Paging", "P0", "P3"),
    ):
        answer = await post(client, alerts_token, payloads.group(name, severity=label))
        assert answer.status_code == 200, answer.text
    found = await state(context, started)
    assert sorted((i.title.split(" ")[0], i.severity) for i in found.incidents) == sorted(
        [("NodeDown", "P1"), ("QueueSlow", "P2"), ("CertExpiring", "P3"), ("Paging", "P3")]
    )
    # No component matched: nothing on the status page changed.
    assert found.component_status == {}


async def test_p0_only_through_a_threshold_that_says_so(
    client: httpx.AsyncClient, context: AppContext, alerts_token: IssuedToken, started: dt.datetime
) -> None:
    async with context.unit_of_work() as uow:
        await uow.session.execute(
            update(Threshold).where(Threshold.name == "disk").values(critical_severity="P0")
        )
    body = payloads.group("DiskSpaceLow", severity="critical", service="backend")
    answer = await post(client, alerts_token, body)
    assert answer.status_code == 200, answer.text
    [incident] = (await state(context, started)).incidents
    assert incident.severity == "P0"


async def test_the_worst_alert_of_a_group_sets_the_severity_and_the_components(
    client: httpx.AsyncClient,
    context: AppContext,
    alerts_token: IssuedToken,
    backend_api: str,
    started: dt.datetime,
) -> None:
    frontend = await add_component(context, "Frontend", ["local/frontend"])
    body = payloads.group("Mixed", alerts=2, environment="local")
    body["alerts"][0]["labels"].update(service="backend", severity="warning")
    body["alerts"][1]["labels"].update(component="frontend", severity="critical")
    answer = await post(client, alerts_token, body)
    assert answer.status_code == 200, answer.text
    found = await state(context, started)
    [incident] = found.incidents
    assert incident.severity == "P1"
    assert found.component_status == {
        backend_api: "degraded_performance",
        frontend: "partial_outage",
    }


async def test_a_grafana_notification_is_taken_as_it_is(
    client: httpx.AsyncClient, context: AppContext, alerts_token: IssuedToken, started: dt.datetime
) -> None:
    """Grafana's webhook contact point sends the same fields and more (version "1")."""
    body = payloads.group("HighMemoryUsage", severity="warning")
    body.update(version="1", orgId=1, state="alerting", title="[FIRING:1]", message="m")
    body["alerts"][0].update(
        silenceURL="http://127.0.0.1:3000/alerting/silence/new",
        dashboardURL="",
        panelURL="",
        values={"B": 91.5, "C": 1},
        valueString="[ var='B' value=91.5 ]",
    )
    answer = await post(client, alerts_token, body)
    assert answer.status_code == 200, answer.text
    [incident] = (await state(context, started)).incidents
    assert incident.severity == "P2"  # memory threshold, warning level


async def test_commonannotations_null_and_missing_fingerprints_are_accepted(
    client: httpx.AsyncClient, context: AppContext, alerts_token: IssuedToken, started: dt.datetime
) -> None:
    body = payloads.group("NoPrints", alerts=3)
    body["commonAnnotations"] = None
    for alert in body["alerts"]:
        del alert["fingerprint"]
    for _ in range(2):
        answer = await post(client, alerts_token, body)
        assert answer.status_code == 200, answer.text
    found = await state(context, started)
    assert len(found.alerts) == 3
    assert {a.received_count for a in found.alerts} == {2}
    assert len(found.incidents) == 1


class TestAuthorisation:
    async def test_who_may_post(self, client: httpx.AsyncClient, context: AppContext) -> None:
        anonymous = await client.post(RECEIVER, json=payloads.firing())
        assert anonymous.status_code == 401
        for role, expected in (
            (Role.VIEWER, 403),
            (Role.DEPLOYER, 403),
            (Role.OPERATOR, 200),
            (Role.ADMIN, 200),
        ):
            token = await issue_token(context, role)
            answer = await post(client, token, payloads.firing())
            assert answer.status_code == expected, (role, answer.text)
        for role in Role:
            token = await issue_token(context, role, scope="alerts")
            answer = await post(client, token, payloads.firing())
            assert answer.status_code == 200, (role, answer.text)
        restricted = await issue_token(context, Role.ADMIN, environment="production")
        assert (await post(client, restricted, payloads.firing())).status_code == 403


class TestBadInput:
    async def test_malformed_notifications_are_422_problems(
        self,
        client: httpx.AsyncClient,
        context: AppContext,
        alerts_token: IssuedToken,
        started: dt.datetime,
    ) -> None:
        def without(field: str) -> dict[str, object]:
            body = payloads.firing()
            del body[field]
            return body

        def alert_with(**fields: object) -> dict[str, object]:
            body = payloads.firing()
            body["alerts"][0].update(fields)
            return body

        cases: list[object] = [
            {},
            [],
            "firing",
            without("groupKey"),
            without("alerts"),
            without("status"),
            without("version"),
            {**payloads.firing(), "status": "pending"},
            {**payloads.firing(), "groupKey": ""},
            {**payloads.firing(), "groupKey": "a\x00b"},
            {**payloads.firing(), "truncatedAlerts": -1},
            {**payloads.firing(), "commonLabels": {"a": 1}},
            alert_with(status="unknown"),
            alert_with(labels={"alertname": "x\x1b[31m"}),
            alert_with(labels=["alertname"]),
            alert_with(startsAt="yesterday"),
            alert_with(startsAt="2026-12-02T14:55:26"),  # no zone
            alert_with(startsAt="9999-12-31T00:01:00-23:59"),  # year 10000 in UTC
            alert_with(endsAt="0001-01-01T00:00:00+01:00"),  # year 0 in UTC
            alert_with(startsAt=1764687326),
            alert_with(fingerprint="x" * 65),
            alert_with(fingerprint="not a fingerprint"),
            alert_with(generatorURL="http://h/\x07"),
        ]
        for body in cases:
            answer = await post(client, alerts_token, body)
            assert answer.status_code == 422, (body, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["errors"], answer.text
        not_json = await client.post(
            RECEIVER,
            content=b"{not json",
            headers={**alerts_token.headers, "Content-Type": "application/json"},
        )
        assert not_json.status_code == 422
        found = await state(context, started)
        assert found.alerts == []
        assert found.incidents == []

    async def test_bodies_above_a_mebibyte_are_413(
        self, client: httpx.AsyncClient, context: AppContext, alerts_token: IssuedToken
    ) -> None:
        body = payloads.firing()
        body["commonAnnotations"]["description"] = "x" * (1024 * 1024)
        answer = await post(client, alerts_token, body)
        assert answer.status_code == 413, answer.text
        assert answer.headers["content-type"] == "application/problem+json"

    async def test_the_receivers_own_limit_applies_below_the_global_one(
        self, context: AppContext, alerts_token: IssuedToken
    ) -> None:
        app = app_with(context, alerts={"max_body_bytes": 2048})
        body = payloads.firing()
        body["commonAnnotations"]["description"] = "x" * 4096
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            too_large = await post(client, alerts_token, body)
            fits = await post(client, alerts_token, payloads.firing())
        assert too_large.status_code == 413, too_large.text
        assert too_large.json()["type"] == "/problems/payload-too-large"
        assert "2048" in too_large.json()["detail"]
        assert fits.status_code == 200, fits.text

    async def test_unknown_fields_are_ignored(
        self, client: httpx.AsyncClient, alerts_token: IssuedToken
    ) -> None:
        body = payloads.firing()
        body["somethingNew"] = {"nested": [1, 2]}
        body["alerts"][0]["alsoNew"] = "x"
        answer = await post(client, alerts_token, body)
        assert answer.status_code == 200, answer.text
