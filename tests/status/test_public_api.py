"""The public status JSON: Statuspage's documented shapes and vocabularies, nothing
internal, the per-process cache following every change, ETag/304, Cache-Control, CORS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from sqlalchemy import event

from app.core.context import AppContext
from app.main import create_app
from app.status.cache import reader
from tests.status import data

SCHEMA = json.loads((Path(__file__).parent / "statuspage_summary.schema.json").read_text())
VALIDATOR = jsonschema_rs.Draft202012Validator(SCHEMA, validate_formats=True)
DOCUMENTS = (
    "summary",
    "status",
    "components",
    "incidents",
    "incidents/unresolved",
    "scheduled-maintenances",
    "scheduled-maintenances/upcoming",
    "scheduled-maintenances/active",
)


def valid(body: dict[str, Any]) -> dict[str, Any]:
    errors = [f"{e.instance_path}: {e.message}" for e in VALIDATOR.iter_errors(body)]
    assert not errors, errors
    return body


async def summary(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/v2/summary.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return valid(response.json())


def test_the_schema_refuses_what_statuspage_does_not_document() -> None:
    """The schema is not vacuous: a leaked field, an unknown status, a missing page fail."""
    good = {
        "page": {
            "id": "p",
            "name": "P",
            "url": "https://status.example.com",
            "time_zone": "Etc/UTC",
            "updated_at": "2026-01-01T00:00:00.000Z",
        },
        "components": [],
        "incidents": [],
        "scheduled_maintenances": [],
        "status": {"indicator": "none", "description": "All Systems Operational"},
    }
    assert VALIDATOR.is_valid(good)
    assert not VALIDATOR.is_valid({**good, "status": {"indicator": "red", "description": "x"}})
    assert not VALIDATOR.is_valid({k: v for k, v in good.items() if k != "page"})
    leaked = {**good, "page": {**good["page"], "severity": "P1"}}
    assert not VALIDATOR.is_valid(leaked)


async def test_all_operational(client: httpx.AsyncClient, context: AppContext) -> None:
    await data.seed_components(context)
    body = await summary(client)
    assert body["status"] == {"indicator": "none", "description": "All Systems Operational"}
    names = [c["name"] for c in body["components"]]
    # Groups come first, as components of their own, then their members by position.
    assert names == [
        "Application",
        "Frontend",
        "Backend API",
        "Data",
        "Database",
        "Cache",
        "File Storage",
    ]
    group = body["components"][0]
    assert group["group"] is True
    assert group["components"] == [body["components"][1]["id"], body["components"][2]["id"]]
    assert body["components"][1]["group_id"] == group["id"]
    assert all(c["status"] == "operational" for c in body["components"])
    assert body["incidents"] == []
    assert body["scheduled_maintenances"] == []
    assert body["page"]["url"] == "http://testserver/status"
    assert data.SECRET_COMPONENT not in json.dumps(body)


async def test_a_p1_incident_shows_major_and_never_its_internals(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    page = await data.seed_components(context)
    incident_id = await data.open_incident(context, page)
    body = await summary(client)
    assert body["status"] == {"indicator": "major", "description": "Partial System Outage"}
    statuses = {c["name"]: c["status"] for c in body["components"]}
    assert statuses["Backend API"] == "partial_outage"
    assert statuses["Application"] == "partial_outage"  # a group shows its worst member
    assert statuses["Frontend"] == "operational"
    (incident,) = body["incidents"]
    assert incident["id"] == incident_id
    assert incident["impact"] == "major"
    assert incident["status"] == "investigating"
    assert incident["shortlink"] == f"http://testserver/status#incident-{incident_id}"
    assert [c["name"] for c in incident["components"]] == ["Backend API"]
    assert [u["body"] for u in incident["incident_updates"]] == [
        "We are investigating elevated error rates on the API."
    ]
    # Nothing internal in any document.
    for name in DOCUMENTS:
        text = (await client.get(f"/api/v2/{name}.json")).text
        for secret in (data.INTERNAL_UPDATE, data.COMMANDER, data.DEDUPE_KEY, "P1", "severity"):
            assert secret not in text, (name, secret)
        assert "commander" not in text
        assert "dedupe" not in text
        assert data.SECRET_COMPONENT not in text


async def test_maintenance_in_progress_and_upcoming(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    page = await data.seed_components(context)
    active_id = await data.maintenance(context, page)
    upcoming_id = await data.maintenance(
        context,
        page,
        title="Cache node replacement",
        component="Cache",
        status="scheduled",
        starts_in=dt.timedelta(days=2),
        message="We will replace a cache node.",
    )
    await data.maintenance(context, page, title="Cancelled window", status="cancelled")
    body = await summary(client)
    assert body["status"] == {
        "indicator": "maintenance",
        "description": "Service Under Maintenance",
    }
    statuses = {c["name"]: c["status"] for c in body["components"]}
    assert statuses["Database"] == "under_maintenance"
    assert statuses["Cache"] == "operational"
    assert [m["id"] for m in body["scheduled_maintenances"]] == [active_id, upcoming_id]
    active = body["scheduled_maintenances"][0]
    assert active["status"] == "in_progress"
    assert active["impact"] == "maintenance"
    assert [c["name"] for c in active["components"]] == ["Database"]
    assert active["incident_updates"][0]["body"] == "The database upgrade is under way."

    def ids(response: httpx.Response) -> list[str]:
        return [m["id"] for m in response.json()["scheduled_maintenances"]]

    assert ids(await client.get("/api/v2/scheduled-maintenances/active.json")) == [active_id]
    assert ids(await client.get("/api/v2/scheduled-maintenances/upcoming.json")) == [upcoming_id]
    listed = ids(await client.get("/api/v2/scheduled-maintenances.json"))
    assert sorted(listed) == sorted([active_id, upcoming_id])  # never the cancelled one


async def test_incident_lists_and_resolution(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    page = await data.seed_components(context)
    first = await data.open_incident(context, page)
    second = await data.open_incident(
        context, page, title="Slow uploads", component="File Storage", severity="P3", impact="none"
    )
    await data.resolve_incident(context, first)
    unresolved = (await client.get("/api/v2/incidents/unresolved.json")).json()["incidents"]
    assert [i["id"] for i in unresolved] == [second]
    everything = (await client.get("/api/v2/incidents.json")).json()["incidents"]
    assert [i["id"] for i in everything] == [second, first]  # newest first
    resolved = everything[1]
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] is not None
    assert resolved["incident_updates"][0]["status"] == "resolved"  # newest update first
    # A P3 has no impact, and the Backend API is restored.
    body = await summary(client)
    assert body["status"]["indicator"] == "minor"  # File Storage degraded by the P3's claim
    statuses = {c["name"]: c["status"] for c in body["components"]}
    assert statuses["Backend API"] == "operational"
    status_only = (await client.get("/api/v2/status.json")).json()
    assert set(status_only) == {"page", "status"}
    assert status_only["status"] == body["status"]
    components = (await client.get("/api/v2/components.json")).json()
    assert components["components"] == body["components"]


async def test_etag_304_and_cache_control(client: httpx.AsyncClient, context: AppContext) -> None:
    page = await data.seed_components(context)
    first = await client.get("/api/v2/summary.json")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "public, max-age=5"
    again = await client.get("/api/v2/summary.json", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    weak = await client.get("/api/v2/summary.json", headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    other = await client.get("/api/v2/summary.json", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200
    # A change: the old ETag no longer matches, the new body shows it at once.
    await data.open_incident(context, page)
    changed = await client.get("/api/v2/summary.json", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["status"]["indicator"] == "major"
    html = await client.get("/status")
    assert (
        await client.get("/status", headers={"If-None-Match": html.headers["etag"]})
    ).status_code == 304


async def test_a_cached_answer_reads_only_the_revision(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    page = await data.seed_components(context)
    incident_id = await data.open_incident(context, page)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("BEGIN"):
            statements.append(statement)

    await client.get("/api/v2/summary.json")  # fills the cache
    before = reader(context).reads
    event.listen(context.engine.sync_engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            assert (await client.get("/api/v2/summary.json")).status_code == 200
    finally:
        event.remove(context.engine.sync_engine, "before_cursor_execute", record)
    # One revision read each (on the reader's own connection), no other statement.
    assert reader(context).reads - before == 3
    assert statements == []
    # A change: the next request reads the tables again.
    await data.resolve_incident(context, incident_id)
    event.listen(context.engine.sync_engine, "before_cursor_execute", record)
    try:
        assert (await client.get("/api/v2/summary.json")).json()["incidents"] == []
    finally:
        event.remove(context.engine.sync_engine, "before_cursor_execute", record)
    assert any("FROM incident" in s for s in statements)


async def test_every_api_process_sees_a_change_at_once(context: AppContext) -> None:
    """Two applications (two API processes, each with its own cache) on one database."""
    page = await data.seed_components(context)
    clients = []
    for _ in range(2):
        transport = httpx.ASGITransport(app=create_app(context.settings, context=context))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
    try:
        for http in clients:
            assert (await summary(http))["status"]["indicator"] == "none"
        await data.maintenance(context, page)
        for http in clients:
            assert (await summary(http))["status"]["indicator"] == "maintenance"
    finally:
        for http in clients:
            await http.aclose()


async def test_cors_for_the_public_status_only(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    origin = {"Origin": "https://example.org"}
    response = await client.get("/api/v2/status.json", headers=origin)
    assert response.headers["access-control-allow-origin"] == "*"
    assert "etag" in response.headers["access-control-expose-headers"].lower()
    preflight = await client.options(
        "/api/v2/summary.json",
        headers={
            **origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "if-none-match",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "GET" in preflight.headers["access-control-allow-methods"]
    refused = await client.options(
        "/api/v2/summary.json",
        headers={**origin, "Access-Control-Request-Method": "DELETE"},
    )
    assert refused.status_code == 400
    private = await client.get("/v1/components", headers=origin)
    assert "access-control-allow-origin" not in private.headers
    health = await client.get("/health", headers=origin)
    assert "access-control-allow-origin" not in health.headers


@pytest.mark.parametrize("path", ["/api/v2/summary.json", "/status"])
async def test_bad_requests_are_problems(
    client: httpx.AsyncClient, context: AppContext, path: str
) -> None:
    unknown = await client.get(path, params={"page": "2"})
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == "application/problem+json"
    post = await client.post(path, json={})
    assert post.status_code == 405
    assert post.headers["content-type"] == "application/problem+json"
    missing = await client.get("/api/v2/nothing.json")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_concurrent_requests_share_revision_reads(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    await data.seed_components(context)
    await client.get("/api/v2/summary.json")  # fills the cache
    before = reader(context).reads
    answers = await asyncio.gather(*(client.get("/api/v2/summary.json") for _ in range(20)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.headers["etag"] for a in answers}) == 1
    assert 1 <= reader(context).reads - before < 10


async def test_another_host_is_rendered_again_but_never_read_again(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    await data.seed_components(context)
    await client.get("/api/v2/summary.json")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(context.engine.sync_engine, "before_cursor_execute", record)
    try:
        other = await client.get("/api/v2/summary.json", headers={"Host": "status.example.org"})
    finally:
        event.remove(context.engine.sync_engine, "before_cursor_execute", record)
    assert other.json()["page"]["url"] == "http://status.example.org/status"
    assert statements == []
