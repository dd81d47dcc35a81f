"""The ``statuspage`` format: Atlassian Statuspage's subscriber webhook bodies (keys
checked against the shapes of Statuspage's documented examples), signed and typed, sent
end to end through the real dispatcher, worker and an HTTP receiver; and only for the
component and incident events of the contract."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import standardwebhooks
from sqlalchemy import select

from app.core.context import AppContext
from app.outbox.catalog import EVENT_TYPES
from app.outbox.models import OutboxEvent
from app.outbox.service import add_event
from app.webhooks import dispatcher, payloads, statuspage
from app.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.factories import IssuedToken
from tests.webhooks.conftest import Receiver, create_webhook, start_receiver

# The shapes of the two bodies in Statuspage's documentation ("Enable webhook
# notifications"): the same keys, our own values.
DOCUMENTED_COMPONENT_UPDATE: dict[str, Any] = {
    "meta": {
        "unsubscribe": "https://status.example.com/?unsubscribe=abc",
        "documentation": "https://status.example.com/docs/webhooks",
    },
    "page": {
        "id": "pg1",
        "status_indicator": "major",
        "status_description": "Partial System Outage",
    },
    "component_update": {
        "created_at": "2026-01-01T12:00:00Z",
        "new_status": "operational",
        "old_status": "major_outage",
        "id": "cu1",
        "component_id": "c1",
    },
    "component": {
        "created_at": "2025-01-01T12:00:00Z",
        "id": "c1",
        "name": "Some component",
        "status": "operational",
    },
}
DOCUMENTED_INCIDENT: dict[str, Any] = {
    "meta": {
        "unsubscribe": "https://status.example.com/?unsubscribe=abc",
        "documentation": "https://status.example.com/docs/webhooks",
    },
    "page": {
        "id": "pg1",
        "status_indicator": "critical",
        "status_description": "Major System Outage",
    },
    "incident": {
        "backfilled": False,
        "created_at": "2026-01-01T12:00:00Z",
        "impact": "critical",
        "impact_override": None,
        "monitoring_at": "2026-01-01T12:30:00Z",
        "postmortem_body": None,
        "postmortem_body_last_updated_at": None,
        "postmortem_ignored": False,
        "postmortem_notified_subscribers": False,
        "postmortem_notified_twitter": False,
        "postmortem_published_at": None,
        "resolved_at": None,
        "scheduled_auto_transition": False,
        "scheduled_for": None,
        "scheduled_remind_prior": False,
        "scheduled_reminded_at": None,
        "scheduled_until": None,
        "shortlink": "https://stspg.example/abc",
        "status": "monitoring",
        "updated_at": "2026-01-01T12:35:00Z",
        "id": "i1",
        "organization_id": "pg1",
        "incident_updates": [
            {
                "body": "A fix is out; we are watching.",
                "created_at": "2026-01-01T12:30:00Z",
                "display_at": "2026-01-01T12:30:00Z",
                "status": "monitoring",
                "twitter_updated_at": None,
                "updated_at": "2026-01-01T12:31:00Z",
                "wants_twitter_update": False,
                "id": "u2",
                "incident_id": "i1",
            },
            {
                "body": "Looking into it.",
                "created_at": "2026-01-01T12:00:00Z",
                "display_at": "2026-01-01T12:00:00Z",
                "status": "investigating",
                "twitter_updated_at": None,
                "updated_at": "2026-01-01T12:01:00Z",
                "wants_twitter_update": False,
                "id": "u1",
                "incident_id": "i1",
            },
        ],
        "name": "The region is down",
    },
}
# Ours on top of Statuspage's: which event and when (as in `standard`).
ADDED = {"type", "timestamp"}
# In Statuspage's real incident bodies, though not in the documented example.
INCIDENT_EXTRA = {"components"}


def shape(value: Any) -> Any:
    """The nested keys of a JSON value (a list by its first item)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def component_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "component_id": "cmp_api",
        "name": "API",
        "group": "Backend",
        "showcase": True,
        "old_status": "operational",
        "new_status": "partial_outage",
        "changed_at": "2026-03-01T10:00:00Z",
        "component_created_at": "2025-06-01T08:00:00Z",
        "links": {"self": "/v1/components/cmp_api"},
    }
    return {**data, **changes}


def incident_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "incident_id": "inc_1",
        "name": "Elevated API errors",
        "status": "identified",
        "severity": "P1",
        "impact": "minor",
        "components": [
            {
                "component_id": "cmp_api",
                "name": "API",
                "status": "degraded_performance",
                "showcase": True,
            }
        ],
        "latest_update": {
            "id": "upd_2",
            "body": "A bad deployment; rolling back.",
            "created_at": "2026-03-01T10:10:00Z",
        },
        "created_at": "2026-03-01T10:00:00Z",
        "updated_at": "2026-03-01T10:10:00Z",
        "monitoring_at": None,
        "resolved_at": None,
        "links": {"self": "/v1/incidents/inc_1"},
    }
    return {**data, **changes}


def outbox_event(type: str, data: dict[str, Any]) -> OutboxEvent:
    created_at = dt.datetime(2026, 3, 1, 10, 0, 1, tzinfo=dt.UTC)
    return OutboxEvent(id="evt_1", type=type, data=data, created_at=created_at)


PAGE = statuspage.page_for("wh_1")


# -- rendering ------------------------------------------------------------------------------


def test_a_component_update_has_the_documented_keys() -> None:
    body = statuspage.render_statuspage(
        outbox_event("component.status_changed", component_data()), PAGE
    )
    assert set(body) == set(DOCUMENTED_COMPONENT_UPDATE) | ADDED
    assert shape({k: v for k, v in body.items() if k not in ADDED}) == shape(
        DOCUMENTED_COMPONENT_UPDATE
    )
    assert body["type"] == "component.status_changed"
    assert body["timestamp"] == "2026-03-01T10:00:01Z"
    assert body["meta"] == {"unsubscribe": "/v1/webhooks/wh_1", "documentation": "/docs"}
    assert body["page"] == {
        "id": "formula-ops",
        "status_indicator": "major",
        "status_description": "Partial System Outage",
    }
    assert body["component_update"] == {
        "created_at": "2026-03-01T10:00:00Z",
        "new_status": "partial_outage",
        "old_status": "operational",
        "id": "evt_1",
        "component_id": "cmp_api",
    }
    assert body["component"] == {
        "created_at": "2025-06-01T08:00:00Z",
        "id": "cmp_api",
        "name": "API",
        "status": "partial_outage",
    }


@pytest.mark.parametrize(
    ("status", "indicator", "description"),
    [
        ("operational", "none", "All Systems Operational"),
        ("degraded_performance", "minor", "Minor Service Outage"),
        ("partial_outage", "major", "Partial System Outage"),
        ("major_outage", "critical", "Major System Outage"),
        ("under_maintenance", "maintenance", "Service Under Maintenance"),
    ],
)
def test_the_page_status_follows_the_component(
    status: str, indicator: str, description: str
) -> None:
    body = statuspage.render_statuspage(
        outbox_event("component.status_changed", component_data(new_status=status)), PAGE
    )
    assert body["page"]["status_indicator"] == indicator
    assert body["page"]["status_description"] == description


def test_an_incident_has_the_documented_keys() -> None:
    body = statuspage.render_statuspage(outbox_event("incident.updated", incident_data()), PAGE)
    assert set(body) == set(DOCUMENTED_INCIDENT) | ADDED
    incident = body["incident"]
    assert set(incident) == set(DOCUMENTED_INCIDENT["incident"]) | INCIDENT_EXTRA
    documented = {**body, "incident": {k: incident[k] for k in DOCUMENTED_INCIDENT["incident"]}}
    assert shape({k: v for k, v in documented.items() if k not in ADDED}) == shape(
        DOCUMENTED_INCIDENT
    )
    assert body["type"] == "incident.updated"
    assert incident["id"] == "inc_1"
    assert incident["name"] == "Elevated API errors"
    assert incident["status"] == "identified"
    assert incident["impact"] == "minor"
    assert incident["organization_id"] == "formula-ops"
    assert incident["shortlink"] == "/v1/incidents/inc_1"
    assert incident["monitoring_at"] is None
    assert incident["postmortem_body"] is None
    assert incident["incident_updates"] == [
        {
            "body": "A bad deployment; rolling back.",
            "created_at": "2026-03-01T10:10:00Z",
            "display_at": "2026-03-01T10:10:00Z",
            "status": "identified",
            "twitter_updated_at": None,
            "updated_at": "2026-03-01T10:10:00Z",
            "wants_twitter_update": False,
            "id": "upd_2",
            "incident_id": "inc_1",
        }
    ]
    assert incident["components"] == [
        {"id": "cmp_api", "name": "API", "status": "degraded_performance"}
    ]


def test_the_page_status_of_an_incident() -> None:
    def indicator(**changes: Any) -> Any:
        body = statuspage.render_statuspage(
            outbox_event("incident.updated", incident_data(**changes)), PAGE
        )
        return body["page"]["status_indicator"], body["page"]["status_description"]

    assert indicator() == ("minor", "Minor Service Outage")
    assert indicator(impact="critical") == ("critical", "Major System Outage")
    down = [{"component_id": "c", "name": "C", "status": "major_outage", "showcase": True}]
    assert indicator(impact="none", components=down) == ("critical", "Major System Outage")
    assert indicator(status="resolved", impact="major") == ("none", "All Systems Operational")
    assert indicator(status="postmortem", impact="major")[0] == "none"


def test_a_postmortem_fills_the_postmortem_fields() -> None:
    body = statuspage.render_statuspage(
        outbox_event("incident.updated", incident_data(status="postmortem")), PAGE
    )
    incident = body["incident"]
    assert incident["postmortem_body"] == "A bad deployment; rolling back."
    assert incident["postmortem_published_at"] == "2026-03-01T10:10:00Z"
    assert incident["postmortem_notified_subscribers"] is True


def test_only_component_and_incident_events_are_wanted() -> None:
    assert statuspage.wants("component.status_changed")
    for name in ("incident.created", "incident.updated", "incident.resolved"):
        assert statuspage.wants(name)
    for name in ("webhook.test", "webhook_endpoint.disabled", "run.succeeded", "component.x"):
        assert not statuspage.wants(name)
    standard = WebhookEndpoint(id="a", format="standard")
    feed = WebhookEndpoint(id="b", format="statuspage")
    assert payloads.wants(standard, "run.succeeded")
    assert not payloads.wants(feed, "run.succeeded")
    assert payloads.wants(feed, "incident.resolved")


def test_the_contract_validates_its_examples_and_is_registered(context: AppContext) -> None:
    for event in statuspage.CONTRACT:
        assert event.example is not None
        event.data.model_validate(event.example)
    registered = context.registry[EVENT_TYPES]
    for name in ("incident.created", "incident.updated", "incident.resolved"):
        assert registered.get(name).data is statuspage.IncidentChanged
    with pytest.raises(ValueError, match="new_status"):
        statuspage.ComponentStatusChanged.model_validate(component_data(new_status="down"))
    with pytest.raises(ValueError, match="severity"):
        statuspage.IncidentChanged.model_validate(incident_data(severity="P4"))


def test_a_body_outside_the_feed_falls_back_to_standard() -> None:
    feed = WebhookEndpoint(id="b", format="statuspage")
    ping = outbox_event("webhook.test", {"endpoint_id": "b", "message": "m", "links": {}})
    assert payloads.body(feed, ping) == payloads.event_body(ping)
    broken = outbox_event("incident.created", {"incident_id": "i"})
    assert payloads.body(feed, broken) == payloads.event_body(broken)
    good = outbox_event("incident.created", incident_data())
    assert "incident" in payloads.body(feed, good)


# -- components hidden from the public status ----------------------------------------------


HIDDEN = "Internal HSM cluster"


def test_the_status_change_of_a_hidden_component_is_left_out() -> None:
    feed = WebhookEndpoint(id="f", format="statuspage")
    standard = WebhookEndpoint(id="s", format="standard")
    hidden = component_data(name=HIDDEN, showcase=False)
    assert not payloads.wants(feed, "component.status_changed", hidden)
    assert payloads.wants(feed, "component.status_changed", component_data())
    assert payloads.wants(standard, "component.status_changed", hidden)
    # Data written before events carried `showcase` counts as hidden.
    old = {k: v for k, v in component_data().items() if k != "showcase"}
    assert not payloads.wants(feed, "component.status_changed", old)
    # A delivery made anyway (before the field existed) says nothing of the component.
    for data in (hidden, old):
        sent = payloads.render(feed, outbox_event("component.status_changed", data)).decode()
        assert "cmp_api" not in sent
        assert HIDDEN not in sent
    # The standard format carries the event as it is, the new field included.
    event = outbox_event("component.status_changed", hidden)
    assert payloads.body(standard, event)["data"] == hidden


def test_an_incident_body_lists_shown_components_only() -> None:
    feed = WebhookEndpoint(id="f", format="statuspage")
    components = [
        {"component_id": "cmp_hsm", "name": HIDDEN, "status": "major_outage", "showcase": False},
        {
            "component_id": "cmp_api",
            "name": "API",
            "status": "degraded_performance",
            "showcase": True,
        },
    ]
    event = outbox_event("incident.created", incident_data(components=components))
    assert payloads.wants(feed, event.type, event.data)
    body = payloads.body(feed, event)
    assert body["incident"]["components"] == [
        {"id": "cmp_api", "name": "API", "status": "degraded_performance"}
    ]
    # The indicator follows the shown components: minor (the impact and the API), not
    # the hidden component's major outage.
    assert body["page"]["status_indicator"] == "minor"
    assert HIDDEN not in payloads.render(feed, event).decode()
    # Components of data written before the field existed count as hidden.
    old = [{k: v for k, v in c.items() if k != "showcase"} for c in components]
    assert (
        payloads.body(feed, outbox_event("incident.created", incident_data(components=old)))[
            "incident"
        ]["components"]
        == []
    )


async def test_the_feed_never_names_a_hidden_component(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, receiver: Receiver
) -> None:
    # The endpoints exist before the events: whichever dispatcher fans them out (this
    # test's, or a worker's still ending), both endpoints get their deliveries.
    feed = await create_webhook(
        client, admin, url=receiver.url, event_types=["*"], format="statuspage"
    )
    standard = await create_webhook(client, admin, url=receiver.url, event_types=["*"])
    created = await client.post(
        "/v1/components", json={"name": HIDDEN, "showcase": False}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    component = created.json()
    changed = await client.patch(
        f"/v1/components/{component['id']}",
        json={"status": "major_outage"},
        headers={**admin.headers, "If-Match": created.headers["ETag"]},
    )
    assert changed.status_code == 200, changed.text
    shown = await client.post("/v1/components", json={"name": "API"}, headers=admin.headers)
    assert shown.status_code == 201, shown.text
    declared = await client.post(
        "/v1/incidents",
        json={
            "title": "Checkout errors",
            "severity": "P2",
            "components": [
                {"component_id": component["id"]},
                {"component_id": shown.json()["id"]},
            ],
        },
        headers=admin.headers,
    )
    assert declared.status_code == 201, declared.text
    assert HIDDEN not in (await client.get("/api/v2/summary.json")).text

    while (await dispatcher.fan_out(context)) != (0, 0):
        pass
    async with context.sessionmaker() as session:
        events = {e.id: e for e in await session.scalars(select(OutboxEvent))}
    hidden_changes = {
        e.id
        for e in events.values()
        if e.type == "component.status_changed" and e.data["component_id"] == component["id"]
    }
    assert hidden_changes, "the hidden component's changes are events"
    assert all(events[i].data["showcase"] is False for i in hidden_changes)
    # The standard endpoint gets every event; the feed none of the hidden component's.
    assert hidden_changes <= {d.event_id for d in await deliveries_of(context, standard["id"])}
    to_feed = {d.event_id for d in await deliveries_of(context, feed["id"])}
    assert to_feed
    assert not to_feed & hidden_changes
    endpoint = await context_endpoint(context, feed["id"])
    sent = [payloads.render(endpoint, events[i]).decode() for i in to_feed]
    assert any('"incident"' in body and '"API"' in body for body in sent)
    leaked = [body[:200] for body in sent if HIDDEN in body or component["id"] in body]
    assert not leaked, leaked


async def context_endpoint(context: AppContext, endpoint_id: str) -> WebhookEndpoint:
    async with context.sessionmaker() as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
    assert endpoint is not None
    return endpoint


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture
async def second_receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    runner = await start_receiver(found)
    yield found
    await runner.cleanup()


async def emit(context: AppContext, type: str, data: dict[str, Any]) -> str:
    async with context.unit_of_work() as uow:
        event = await add_event(uow.session, type, data)
    return event.id


async def deliveries_of(context: AppContext, endpoint_id: str) -> list[WebhookDelivery]:
    async with context.sessionmaker() as session:
        return list(
            (
                await session.scalars(
                    select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
                )
            ).all()
        )


async def test_a_statuspage_endpoint_receives_the_feed_signed(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    second_receiver: Receiver,
    fast_worker: AppContext,
) -> None:
    feed = await create_webhook(
        client, operator, url=receiver.url, event_types=["*"], format="statuspage"
    )
    assert feed["format"] == "statuspage"
    standard = await create_webhook(client, operator, url=second_receiver.url, event_types=["*"])
    ping = await emit(
        fast_worker, "webhook.test", {"endpoint_id": "e", "message": "m", "links": {}}
    )
    run = await emit(fast_worker, "run.succeeded", {"id": "r1", "links": {"self": "/v1/runs/r1"}})
    component = await emit(fast_worker, "component.status_changed", component_data())
    incident = await emit(fast_worker, "incident.created", incident_data())

    everything = await second_receiver.wait_for(4)
    by_id = {r.webhook_id: r for r in await receiver.wait_for(2)}
    # Every event was fanned out to both endpoints in the same transaction: the feed's
    # deliveries are all there is for it.
    assert {d.event_id for d in await deliveries_of(fast_worker, feed["id"])} == {
        component,
        incident,
    }
    assert {r.webhook_id for r in everything} == {ping, run, component, incident}
    assert set(by_id) == {component, incident}

    body = standardwebhooks.Webhook(feed["secret"]).verify(
        by_id[component].body, by_id[component].headers
    )
    assert body["type"] == "component.status_changed"
    assert set(body) == set(DOCUMENTED_COMPONENT_UPDATE) | ADDED
    assert body["component_update"]["new_status"] == "partial_outage"
    assert body["component_update"]["old_status"] == "operational"
    assert body["component"]["name"] == "API"
    assert body["page"]["status_indicator"] == "major"
    assert body["meta"]["unsubscribe"] == f"/v1/webhooks/{feed['id']}"

    declared = standardwebhooks.Webhook(feed["secret"]).verify(
        by_id[incident].body, by_id[incident].headers
    )
    assert declared["type"] == "incident.created"
    assert declared["incident"]["name"] == "Elevated API errors"
    assert declared["incident"]["incident_updates"][0]["body"] == (
        "A bad deployment; rolling back."
    )

    plain = {r.webhook_id: r for r in everything}[component]
    same = standardwebhooks.Webhook(standard["secret"]).verify(plain.body, plain.headers)
    assert same == {
        "type": "component.status_changed",
        "timestamp": body["timestamp"],
        "data": component_data(),
    }


async def test_the_test_event_of_a_statuspage_endpoint_is_standard(
    client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    feed = await create_webhook(client, operator, url=receiver.url, format="statuspage")
    response = await client.post(f"/v1/webhooks/{feed['id']}/test", headers=operator.headers)
    assert response.status_code == 200, response.text
    (item,) = receiver.received
    body = standardwebhooks.Webhook(feed["secret"]).verify(item.body, item.headers)
    assert body["type"] == "webhook.test"
    assert set(body) == {"type", "timestamp", "data"}
