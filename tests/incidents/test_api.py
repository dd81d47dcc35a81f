"""``/v1/incidents`` over HTTP: the life of an incident (status machine, components,
timeline, events, audit), idempotent creation, illegal moves (409), stale writes (412),
bad input (problems, never a 500) and who may do what."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.core.context import AppContext
from app.outbox.models import OutboxEvent
from app.webhooks import payloads
from app.webhooks.models import WebhookEndpoint
from tests.factories import IssuedToken
from tests.incidents.conftest import component_status, declare, events, make_component

# The API's rules; the clocks' storage runs on both (test_clocks).
pytestmark = pytest.mark.one_backend("sqlite")

PROBLEM = "application/problem+json"


async def _audit_actions(context: AppContext, incident_id: str) -> list[tuple[str, str]]:
    async with context.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEvent.action, AuditEvent.outcome)
            .where(AuditEvent.resource_id == incident_id)
            .order_by(AuditEvent.created_at, AuditEvent.id)
        )
        return [(action, outcome) for action, outcome in rows.all()]


async def _update(
    client: httpx.AsyncClient, token: IssuedToken, incident_id: str, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/incidents/{incident_id}/updates",
        json={"message": "An update.", **body},
        headers=token.headers,
    )


async def test_the_life_of_an_incident(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken, viewer: IssuedToken
) -> None:
    api = await make_component(context, "Backend API")
    db = await make_component(context, "Database")
    created = await declare(
        client,
        operator,
        title="Elevated API errors",
        severity="P1",
        components=[{"component_id": api.id}, {"component_id": db.id, "status": "major_outage"}],
        message="We are looking into elevated errors.",
        commander="alice",
    )
    incident_id = created["id"]
    assert created["status"] == "investigating"
    assert created["impact"] == "major"
    assert created["source"] == "manual"
    assert {c["name"]: (c["status"], c["current_status"]) for c in created["components"]} == {
        "Backend API": ("partial_outage", "partial_outage"),  # the P1 default
        "Database": ("major_outage", "major_outage"),
    }
    assert created["ack_due_at"] is not None
    assert created["acknowledged_at"] is None
    assert [e["body"] for e in created["timeline"]] == ["We are looking into elevated errors."]
    assert created["recent_deployments"] == []

    read = await client.get(f"/v1/incidents/{incident_id}", headers=viewer.headers)
    assert read.status_code == 200
    assert read.headers["ETag"] == f'"{incident_id}.1"'

    acked = await client.post(f"/v1/incidents/{incident_id}/acknowledge", headers=operator.headers)
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged_at"] is not None
    again = await client.post(f"/v1/incidents/{incident_id}/acknowledge", headers=operator.headers)
    assert again.json()["acknowledged_at"] == acked.json()["acknowledged_at"]

    for status in ("identified", "monitoring"):
        moved = await _update(client, operator, incident_id, status=status)
        assert moved.status_code == 201, moved.text
        assert moved.json()["status"] == status
    assert await component_status(context, api.id) == "partial_outage"  # monitoring keeps
    back = await _update(client, operator, incident_id, status="investigating")
    assert back.json()["status"] == "investigating"  # it came back
    note = await _update(
        client, operator, incident_id, message="Paged the DBA.", visibility="internal"
    )
    assert note.json()["timeline"][-1]["visibility"] == "internal"

    resolved = await client.post(
        f"/v1/incidents/{incident_id}/resolve",
        json={"message": "Fixed by a rollback."},
        headers=operator.headers,
    )
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert body["status"] == "resolved"
    assert body["resolved_at"] is not None
    assert body["next_update_due_at"] is None
    assert await component_status(context, api.id) == "operational"
    assert await component_status(context, db.id) == "operational"

    postmortem = await client.put(
        f"/v1/incidents/{incident_id}/postmortem",
        json={
            "body": "# What happened\n\nA bad deploy.",
            "action_items": [{"title": "Add a canary", "owner": "bob", "due_on": "2027-01-15"}],
            "publish": True,
        },
        headers=operator.headers,
    )
    assert postmortem.status_code == 200, postmortem.text
    published = postmortem.json()
    assert published["status"] == "postmortem"
    assert published["postmortem"]["action_items"] == [
        {"title": "Add a canary", "owner": "bob", "due_on": "2027-01-15", "done": False}
    ]
    assert published["postmortem"]["published_at"] is not None

    assert len(await events(context, "incident.created")) == 1
    assert len(await events(context, "incident.resolved")) == 1
    updated = await events(context, "incident.updated")
    # identified, monitoring, investigating, the postmortem; not the internal notes
    assert [e["status"] for e in updated] == [
        "identified",
        "monitoring",
        "investigating",
        "postmortem",
    ]
    assert updated[-1]["latest_update"]["body"].startswith("# What happened")
    actions = await _audit_actions(context, incident_id)
    assert [a for a, _ in actions] == [
        "incident.create",
        *["incident.acknowledge"] * 2,
        *["incident.add_update"] * 4,
        "incident.resolve",
        "incident.postmortem",
    ]

    listed = await client.get("/v1/incidents?open=false", headers=viewer.headers)
    assert [i["id"] for i in listed.json()["items"]] == [incident_id]
    assert (await client.get("/v1/incidents?open=true", headers=viewer.headers)).json()[
        "items"
    ] == []


async def test_illegal_moves_are_409(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    incident = await declare(client, operator)
    incident_id = incident["id"]
    early = await client.put(
        f"/v1/incidents/{incident_id}/postmortem", json={"body": "x"}, headers=operator.headers
    )
    assert early.status_code == 409
    assert early.json()["type"] == "/problems/postmortem-too-early"
    to_postmortem = await _update(client, operator, incident_id, status="postmortem")
    assert to_postmortem.status_code == 422  # not a status an update sets
    resolved = await client.post(f"/v1/incidents/{incident_id}/resolve", headers=operator.headers)
    assert resolved.status_code == 200
    for response in (
        await _update(client, operator, incident_id, status="investigating"),
        await _update(client, operator, incident_id, status="monitoring"),
        await client.post(f"/v1/incidents/{incident_id}/resolve", headers=operator.headers),
    ):
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "/problems/illegal-incident-transition"
    patched = await client.patch(
        f"/v1/incidents/{incident_id}", json={"title": "Late"}, headers=operator.headers
    )
    assert patched.status_code == 409
    assert patched.json()["type"] == "/problems/incident-closed"
    acked = await client.post(f"/v1/incidents/{incident_id}/acknowledge", headers=operator.headers)
    assert acked.status_code == 409
    note = await _update(client, operator, incident_id, message="Customer notified.")
    assert note.status_code == 201  # a note on a resolved incident is fine
    refused = [a for a in await _audit_actions(context, incident_id) if a[1] == "failed"]
    assert len(refused) >= 5


async def test_patch_changes_severity_components_and_refuses_stale_writes(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    api = await make_component(context, "Backend API")
    cache = await make_component(context, "Cache")
    incident = await declare(client, operator, severity="P3", components=[{"component_id": api.id}])
    incident_id = incident["id"]
    first_due = incident["ack_due_at"]
    tag = (await client.get(f"/v1/incidents/{incident_id}", headers=operator.headers)).headers[
        "ETag"
    ]
    changed = await client.patch(
        f"/v1/incidents/{incident_id}",
        json={
            "severity": "P0",
            "components": [{"component_id": cache.id, "status": "major_outage"}],
            "commander": "carol",
        },
        headers={**operator.headers, "If-Match": tag},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["severity"] == "P0"
    assert body["impact"] == "critical"
    assert body["commander"] == "carol"
    assert body["ack_due_at"] != first_due
    assert body["ack_due_at"] == body["created_at"]  # P0: immediately
    assert [c["name"] for c in body["components"]] == ["Cache"]
    assert await component_status(context, api.id) == "operational"
    assert await component_status(context, cache.id) == "major_outage"

    stale = await client.patch(
        f"/v1/incidents/{incident_id}",
        json={"title": "x"},
        headers={**operator.headers, "If-Match": tag},
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == PROBLEM
    cleared = await client.patch(
        f"/v1/incidents/{incident_id}", json={"commander": None}, headers=operator.headers
    )
    assert cleared.json()["commander"] is None


async def test_creation_is_idempotent(client: httpx.AsyncClient, operator: IssuedToken) -> None:
    body = {"title": "Login fails", "severity": "P1"}
    headers = {**operator.headers, "Idempotency-Key": "incident-1"}
    first = await client.post("/v1/incidents", json=body, headers=headers)
    second = await client.post("/v1/incidents", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    other = await client.post("/v1/incidents", json={**body, "severity": "P2"}, headers=headers)
    assert other.status_code == 422
    listed = await client.get("/v1/incidents", headers=operator.headers)
    assert len(listed.json()["items"]) == 1


async def test_who_may_do_what(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    viewer: IssuedToken,
    deployer: IssuedToken,
) -> None:
    incident = await declare(client, operator)
    incident_id = incident["id"]
    assert (await client.get("/v1/incidents")).status_code == 401
    for token in (viewer, deployer):
        assert (await client.get("/v1/incidents", headers=token.headers)).status_code == 200
        attempts = [
            await client.post(
                "/v1/incidents", json={"title": "t", "severity": "P1"}, headers=token.headers
            ),
            await client.patch(
                f"/v1/incidents/{incident_id}", json={"title": "t"}, headers=token.headers
            ),
            await _update(client, token, incident_id),
            await client.post(f"/v1/incidents/{incident_id}/acknowledge", headers=token.headers),
            await client.post(f"/v1/incidents/{incident_id}/resolve", headers=token.headers),
            await client.put(
                f"/v1/incidents/{incident_id}/postmortem",
                json={"body": "x"},
                headers=token.headers,
            ),
            await client.post(
                f"/v1/incidents/{incident_id}/rollback",
                json={"deployment_id": "x"},
                headers=token.headers,
            ),
        ]
        assert [r.status_code for r in attempts] == [403] * len(attempts)
        assert all(r.headers["content-type"] == PROBLEM for r in attempts)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": "t"},
        {"title": "t", "severity": "P4"},
        {"title": "", "severity": "P1"},
        {"title": "x" * 201, "severity": "P1"},
        {"title": "bad\u0000title", "severity": "P1"},
        {"title": "t", "severity": "P1", "extra": 1},
        {"title": "t", "severity": "P1", "components": [{"component_id": "a b"}]},
        {"title": "t", "severity": "P1", "components": [{"component_id": "a", "status": "down"}]},
        {"title": "t", "severity": "P1", "components": "a"},
        {"title": "t", "severity": "P1", "message": "x" * 5001},
        {"title": "t", "severity": "P1", "commander": 5},
        {"title": ["t"], "severity": "P1"},
    ],
)
async def test_bad_creation_bodies_are_422(
    client: httpx.AsyncClient, operator: IssuedToken, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/incidents", json=body, headers=operator.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"]


async def test_other_bad_input_is_a_problem(
    client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    incident = await declare(client, operator)
    incident_id = incident["id"]
    cases: list[tuple[str, str, Any, int]] = [
        (
            "POST",
            "/v1/incidents",
            {"title": "t", "severity": "P1", "components": [{"component_id": "nope"}]},
            404,
        ),
        ("GET", "/v1/incidents/does-not-exist", None, 404),
        ("GET", "/v1/incidents/bad%20id", None, 422),
        ("GET", "/v1/incidents?status=open", None, 422),
        ("GET", "/v1/incidents?severity=P9", None, 422),
        ("GET", "/v1/incidents?open=maybe", None, 422),
        ("GET", "/v1/incidents?cursor=nonsense", None, 422),
        ("GET", "/v1/incidents?limit=0", None, 422),
        ("GET", "/v1/incidents?colour=red", None, 422),
        ("PATCH", f"/v1/incidents/{incident_id}", {"severity": "P7"}, 422),
        ("PATCH", f"/v1/incidents/{incident_id}", {"status": "resolved"}, 422),
        ("PATCH", "/v1/incidents/nope", {"title": "x"}, 404),
        ("POST", f"/v1/incidents/{incident_id}/updates", {}, 422),
        ("POST", f"/v1/incidents/{incident_id}/updates", {"message": "m", "visibility": "x"}, 422),
        ("POST", f"/v1/incidents/{incident_id}/updates", {"message": "m", "status": "fixed"}, 422),
        ("POST", "/v1/incidents/nope/updates", {"message": "m"}, 404),
        ("POST", f"/v1/incidents/{incident_id}/acknowledge", {"message": ""}, 422),
        ("POST", f"/v1/incidents/{incident_id}/resolve", {"message": 3}, 422),
        ("POST", "/v1/incidents/nope/resolve", None, 404),
        ("PUT", f"/v1/incidents/{incident_id}/postmortem", {"body": ""}, 422),
        (
            "PUT",
            f"/v1/incidents/{incident_id}/postmortem",
            {"body": "x", "action_items": [{}]},
            422,
        ),
        (
            "PUT",
            f"/v1/incidents/{incident_id}/postmortem",
            {"body": "x", "action_items": [{"title": "t", "due_on": "soon"}]},
            422,
        ),
        ("POST", f"/v1/incidents/{incident_id}/rollback", {}, 422),
        ("POST", f"/v1/incidents/{incident_id}/rollback", {"deployment_id": "nope"}, 409),
        ("POST", "/v1/incidents/nope/rollback", {"deployment_id": "x"}, 404),
    ]
    for method, url, body, status in cases:
        response = await client.request(method, url, json=body, headers=operator.headers)
        assert response.status_code == status, (method, url, body, response.text)
        assert response.headers["content-type"] == PROBLEM, (method, url)
    not_json = await client.post(
        "/v1/incidents",
        content=b"{not json",
        headers={**operator.headers, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422
    bad_match = await client.patch(
        f"/v1/incidents/{incident_id}",
        json={"title": "x"},
        headers={**operator.headers, "If-Match": "not-a-tag"},
    )
    assert bad_match.status_code == 422


async def test_the_list_filters_and_pages(
    client: httpx.AsyncClient, operator: IssuedToken, viewer: IssuedToken
) -> None:
    ids = [
        (await declare(client, operator, title=f"i{n}", severity=severity))["id"]
        for n, severity in enumerate(("P1", "P2", "P1", "P3"))
    ]
    p1 = await client.get("/v1/incidents?severity=P1", headers=viewer.headers)
    assert [i["id"] for i in p1.json()["items"]] == [ids[2], ids[0]]
    seen: list[str] = []
    url = "/v1/incidents?limit=3"
    while True:
        page = (await client.get(url, headers=viewer.headers)).json()
        seen += [i["id"] for i in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/incidents?limit=3&cursor={page['next_cursor']}"
    assert seen == ids[::-1]
    investigating = await client.get(
        "/v1/incidents?status=investigating&open=true", headers=viewer.headers
    )
    assert len(investigating.json()["items"]) == 4


async def test_the_longest_postmortem_is_published(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    incident = await declare(client, operator)
    incident_id = incident["id"]
    await client.post(f"/v1/incidents/{incident_id}/resolve", headers=operator.headers)
    longest = "\U0001f4dd" * 50_000  # four bytes each in UTF-8
    published = await client.put(
        f"/v1/incidents/{incident_id}/postmortem",
        json={"body": longest, "publish": True},
        headers=operator.headers,
    )
    assert published.status_code == 200, published.text[:500]
    (event,) = [e for e in await events(context, "incident.updated") if e["status"] == "postmortem"]
    assert event["latest_update"]["body"] == longest
    too_long = await client.put(
        f"/v1/incidents/{incident_id}/postmortem",
        json={"body": longest + "x", "publish": True},
        headers=operator.headers,
    )
    assert too_long.status_code == 422


async def test_its_events_feed_a_statuspage_endpoint(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    api = await make_component(context, "Backend API")
    incident = await declare(
        client, operator, severity="P1", components=[{"component_id": api.id}], message="Looking."
    )
    await client.post(
        f"/v1/incidents/{incident['id']}/resolve",
        json={"message": "All good."},
        headers=operator.headers,
    )
    feed = WebhookEndpoint(id="feed", format="statuspage")
    async with context.sessionmaker() as session:
        rows = list(
            await session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.type.like("incident.%"))
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
            )
        )
    bodies = [payloads.body(feed, row) for row in rows]
    assert [b["type"] for b in bodies] == ["incident.created", "incident.resolved"]
    opened, closed = (b["incident"] for b in bodies)
    assert opened["impact"] == "major"
    assert opened["incident_updates"][0]["body"] == "Looking."
    assert closed["status"] == "resolved"
    assert closed["incident_updates"][0]["body"] == "All good."
