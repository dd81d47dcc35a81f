"""``/v1/maintenances`` through the API: scheduling, bad input (422, never 500), roles,
changes with If-Match, updates, moves by hand (and the illegal ones, 409), component
claims while a window lasts, events and the audit trail."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from app.components import claims
from app.core.context import AppContext
from tests.factories import IssuedToken
from tests.helpers import audit_events_after, last_audit_seq
from tests.maintenances.conftest import (
    add_component,
    add_environment,
    component_status,
    events,
    schedule,
    stamp,
    window_body,
)

# The API's rules; the scheduler's and the freeze's storage run on both (test_scheduler).
pytestmark = pytest.mark.one_backend("sqlite")

HOUR = dt.timedelta(hours=1)


def _soon() -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.now(dt.UTC) + HOUR
    return start, start + HOUR


async def test_schedule_read_and_list(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    operator: IssuedToken,
    viewer: IssuedToken,
) -> None:
    database = await add_component(context, "Database")
    await add_environment(client, admin, "production")
    start, end = _soon()
    seq = await last_audit_seq(context)
    body = window_body(
        start,
        end,
        description="Upgrade to 16.\nExpect a short read-only period.",
        components=[database],
        environments=["production"],
    )
    keyed = {**operator.headers, "Idempotency-Key": "db-upgrade"}
    response = await client.post("/v1/maintenances", json=body, headers=keyed)
    assert response.status_code == 201, response.text
    window = response.json()
    assert response.headers["Location"] == f"/v1/maintenances/{window['id']}"
    assert response.headers["ETag"] == f'"{window["id"]}.1"'
    assert window["status"] == "scheduled"
    assert window["components"] == [{"id": database, "name": "Database", "status": "operational"}]
    assert window["environments"] == ["production"]
    assert (window["deploy_window"], window["auto_transition"]) == (False, True)
    assert window["scheduled_for"] == stamp(start)
    assert window["updates"] == []
    assert window["created_by"] == f"token:{operator.id}"

    # The same key replays the answer; nothing is scheduled twice.
    again = await client.post("/v1/maintenances", json=body, headers=keyed)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == window["id"]

    [scheduled] = await events(context)
    assert scheduled.type == "maintenance.scheduled"
    assert scheduled.data["maintenance_id"] == window["id"]
    assert scheduled.data["components"] == [
        {"component_id": database, "name": "Database", "status": "operational"}
    ]
    [audited] = await audit_events_after(context, seq, action="maintenance.create")
    assert audited.resource_id == window["id"]
    assert audited.summary["environments"] == ["production"]

    read = await client.get(f"/v1/maintenances/{window['id']}", headers=viewer.headers)
    assert read.status_code == 200
    assert read.json() == window
    listed = await client.get("/v1/maintenances", headers=viewer.headers)
    assert [w["id"] for w in listed.json()["items"]] == [window["id"]]
    for query, found in (
        ({"status": "scheduled"}, [window["id"]]),
        ({"status": "completed"}, []),
        ({"environment": "production"}, [window["id"]]),
        ({"environment": "staging"}, []),
        ({"component": database}, [window["id"]]),
    ):
        listed = await client.get("/v1/maintenances", params=query, headers=viewer.headers)
        assert listed.status_code == 200, listed.text
        assert [w["id"] for w in listed.json()["items"]] == found, query


async def test_pages(context: AppContext, client: httpx.AsyncClient, operator: IssuedToken) -> None:
    start, end = _soon()
    ids = [
        (await schedule(client, operator, window_body(start, end, title=f"w{i}")))["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = ""
    while True:
        page = await client.get(
            "/v1/maintenances", params={"limit": 2, "cursor": cursor}, headers=operator.headers
        )
        assert page.status_code == 200, page.text
        seen += [w["id"] for w in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"scheduled_until": "same"}, ["body"]),
        ({"scheduled_until": "before"}, ["body"]),
        ({"scheduled_for": "2026-12-24T22:00:00"}, ["body", "scheduled_for"]),
        ({"scheduled_for": 1798156800}, ["body", "scheduled_for"]),
        ({"scheduled_for": None}, ["body", "scheduled_for"]),
        ({"title": ""}, ["body", "title"]),
        ({"title": "x" * 201}, ["body", "title"]),
        ({"title": "line\nbreak"}, ["body", "title"]),
        ({"description": "nul\x00"}, ["body", "description"]),
        ({"components": ["not an id!"]}, ["body", "components", 0]),
        ({"environments": ["Production"]}, ["body", "environments", 0]),
        ({"environments": "production"}, ["body", "environments"]),
        ({"deploy_window": "sometimes"}, ["body", "deploy_window"]),
        ({"status": "in_progress"}, ["body", "status"]),
    ],
)
async def test_bad_input_is_a_422(
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    change: dict[str, object],
    where: list[object],
) -> None:
    start, end = _soon()
    body: dict[str, object] = window_body(start, end)
    if change.get("scheduled_until") == "same":
        change = {"scheduled_until": body["scheduled_for"]}
    elif change.get("scheduled_until") == "before":
        change = {"scheduled_until": stamp(start - dt.timedelta(seconds=1))}
    response = await client.post(
        "/v1/maintenances", json={**body, **change}, headers=operator.headers
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert where in [e["loc"][: len(where)] for e in problem["errors"]], problem
    assert (await client.get("/v1/maintenances", headers=operator.headers)).json()["items"] == []


async def test_unknown_components_environments_and_past_windows_are_422(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, operator: IssuedToken
) -> None:
    database = await add_component(context, "Database")
    await add_environment(client, admin, "production")
    start, end = _soon()
    ghost = "0193f0c2-5a4e-7d1c-9b2a-3c4d5e6f7a8b"
    for extra, loc in (
        ({"components": [database, ghost]}, ["body", "components", 1]),
        ({"environments": ["production", "nowhere"]}, ["body", "environments", 1]),
        ({"components": [database, database]}, ["body"]),
        ({"environments": ["production", "production"]}, ["body"]),
    ):
        response = await client.post(
            "/v1/maintenances", json=window_body(start, end, **extra), headers=operator.headers
        )
        assert response.status_code == 422, response.text
        assert loc in [e["loc"] for e in response.json()["errors"]]
    past = dt.datetime.now(dt.UTC) - 2 * HOUR
    response = await client.post(
        "/v1/maintenances", json=window_body(past, past + HOUR), headers=operator.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "/problems/invalid-maintenance"
    assert (await client.get("/v1/maintenances", headers=operator.headers)).json()["items"] == []


async def test_roles(
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    viewer: IssuedToken,
    deployer: IssuedToken,
) -> None:
    start, end = _soon()
    window = await schedule(client, operator, window_body(start, end))
    path = f"/v1/maintenances/{window['id']}"
    assert (await client.get("/v1/maintenances")).status_code == 401
    assert (await client.get(path, headers={"Authorization": "Bearer nope"})).status_code == 401
    for token in (viewer, deployer):
        for method, url, body in (
            ("POST", "/v1/maintenances", window_body(start, end)),
            ("PATCH", path, {"title": "mine now"}),
            ("POST", f"{path}/updates", {"body": "hello"}),
            ("POST", f"{path}/start", None),
            ("POST", f"{path}/complete", None),
            ("POST", f"{path}/cancel", None),
        ):
            response = await client.request(method, url, json=body, headers=token.headers)
            assert response.status_code == 403, (token.role, method, url, response.text)
    assert (await client.get(path, headers=viewer.headers)).status_code == 200
    assert (await client.get(path, headers=deployer.headers)).status_code == 200
    read = await client.get(path, headers=viewer.headers)
    assert read.json()["status"] == "scheduled"
    assert read.json()["title"] == "Database upgrade"


async def test_unknown_window_is_a_404(client: httpx.AsyncClient, operator: IssuedToken) -> None:
    ghost = "/v1/maintenances/0193f0c2-5a4e-7d1c-9b2a-3c4d5e6f7a8b"
    for method, url, body in (
        ("GET", ghost, None),
        ("PATCH", ghost, {"title": "x"}),
        ("POST", f"{ghost}/updates", {"body": "x"}),
        ("POST", f"{ghost}/start", None),
    ):
        response = await client.request(method, url, json=body, headers=operator.headers)
        assert response.status_code == 404, response.text
        assert response.json()["type"] == "/problems/maintenance-not-found"
    response = await client.get("/v1/maintenances/NOT-AN-ID", headers=operator.headers)
    assert response.status_code == 422


async def test_lifecycle_by_hand_and_its_illegal_moves(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    database = await add_component(context, "Database")
    cache = await add_component(context, "Cache")
    start, end = _soon()
    window = await schedule(client, operator, window_body(start, end, components=[database]))
    path = f"/v1/maintenances/{window['id']}"
    seq = await last_audit_seq(context)

    for move in ("complete",):
        refused = await client.post(f"{path}/{move}", headers=operator.headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"] == "/problems/maintenance-transition"

    started = await client.post(
        f"{path}/start", json={"message": "Starting early."}, headers=operator.headers
    )
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["status"] == "in_progress"
    assert body["started_at"] is not None
    assert body["components"][0]["status"] == "under_maintenance"
    assert [(u["status"], u["body"]) for u in body["updates"]] == [
        ("in_progress", "Starting early.")
    ]
    assert await component_status(context, database) == "under_maintenance"
    assert await component_status(context, cache) == "operational"

    for move in ("start", "cancel"):
        refused = await client.post(f"{path}/{move}", headers=operator.headers)
        assert refused.status_code == 409, (move, refused.text)
        assert refused.json()["status"] == 409
    # Once started, its start is history.
    refused = await client.patch(
        path, json={"scheduled_for": stamp(start + HOUR / 2)}, headers=operator.headers
    )
    assert refused.status_code == 409, refused.text

    # Components of a window in progress change under maintenance at once.
    changed = await client.patch(path, json={"components": [cache]}, headers=operator.headers)
    assert changed.status_code == 200, changed.text
    assert await component_status(context, database) == "operational"
    assert await component_status(context, cache) == "under_maintenance"

    update = await client.post(
        f"{path}/updates", json={"body": "Half way."}, headers=operator.headers
    )
    assert update.status_code == 201, update.text
    assert update.json()["updates"][-1]["body"] == "Half way."

    completed = await client.post(f"{path}/complete", headers=operator.headers)
    assert completed.status_code == 200, completed.text
    assert completed.json()["status"] == "completed"
    assert completed.json()["updates"][-1]["body"] == (
        "The scheduled maintenance has been completed."
    )
    assert await component_status(context, cache) == "operational"
    for move in ("start", "complete", "cancel"):
        refused = await client.post(f"{path}/{move}", headers=operator.headers)
        assert refused.status_code == 409, (move, refused.text)
    refused = await client.patch(path, json={"components": []}, headers=operator.headers)
    assert refused.status_code == 409
    retitled = await client.patch(
        path, json={"title": "DB upgrade (done)"}, headers=operator.headers
    )
    assert retitled.status_code == 200
    assert retitled.json()["title"] == "DB upgrade (done)"

    assert [e.type for e in await events(context)] == [
        "maintenance.scheduled",
        "maintenance.started",
        "maintenance.completed",
    ]
    changes = [
        e for e in await events(context, "component.") if e.type == "component.status_changed"
    ]
    assert [(e.data["name"], e.data["new_status"]) for e in changes] == [
        ("Database", "under_maintenance"),
        ("Database", "operational"),
        ("Cache", "under_maintenance"),
        ("Cache", "operational"),
    ]
    actions = [e.action for e in await audit_events_after(context, seq)]
    for action in (
        "maintenance.start",
        "maintenance.update",
        "maintenance_update.create",
        "maintenance.complete",
    ):
        assert action in actions
    # The refused moves are in the trail too.
    failed = await audit_events_after(context, seq, action="maintenance.cancel")
    assert failed
    assert {e.outcome for e in failed} == {"failed"}


async def test_cancel_a_scheduled_window(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    start, end = _soon()
    window = await schedule(client, operator, window_body(start, end))
    path = f"/v1/maintenances/{window['id']}"
    cancelled = await client.post(f"{path}/cancel", headers=operator.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["completed_at"] is not None
    for move in ("start", "complete", "cancel"):
        assert (await client.post(f"{path}/{move}", headers=operator.headers)).status_code == 409
    refused = await client.post(f"{path}/updates", json={"body": "x"}, headers=operator.headers)
    assert refused.status_code == 409


async def test_changes_need_the_current_etag_and_a_real_window(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    start, end = _soon()
    window = await schedule(client, operator, window_body(start, end))
    path = f"/v1/maintenances/{window['id']}"
    first = await client.patch(
        path, json={"title": "Renamed"}, headers={**operator.headers, "If-Match": '"nope.1"'}
    )
    assert first.status_code == 412, first.text
    current = (await client.get(path, headers=operator.headers)).headers["ETag"]
    moved = await client.patch(
        path,
        json={"scheduled_for": stamp(start + HOUR / 2), "title": "Renamed"},
        headers={**operator.headers, "If-Match": current},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["scheduled_for"] == stamp(start + HOUR / 2)
    assert moved.headers["ETag"] != current
    stale = await client.patch(
        path, json={"title": "Again"}, headers={**operator.headers, "If-Match": current}
    )
    assert stale.status_code == 412
    # The merged window must still end after it starts.
    for change in (
        {"scheduled_for": stamp(end)},
        {"scheduled_until": stamp(start)},
        {"scheduled_for": stamp(end), "scheduled_until": stamp(start)},
    ):
        refused = await client.patch(path, json=change, headers=operator.headers)
        assert refused.status_code == 422, (change, refused.text)
    for change in ({"title": None}, {"deploy_window": None}, {"components": ["?"]}, {"x": 1}):
        refused = await client.patch(path, json=change, headers=operator.headers)
        assert refused.status_code == 422, (change, refused.text)
    refused = await client.patch(path, json={"environments": ["nowhere"]}, headers=operator.headers)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "environments", 0]
    assert (await client.get(path, headers=operator.headers)).json()["title"] == "Renamed"


async def test_a_window_restores_what_remains_claimed(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    """An incident's outage outranks maintenance, and survives the window's end."""
    api = await add_component(context, "Backend API")
    async with context.unit_of_work() as uow:
        await claims.set_claims(uow.session, claims.INCIDENT, "inc-1", {api: "partial_outage"})
    start, end = _soon()
    window = await schedule(client, operator, window_body(start, end, components=[api]))
    path = f"/v1/maintenances/{window['id']}"
    assert (await client.post(f"{path}/start", headers=operator.headers)).status_code == 200
    assert await component_status(context, api) == "partial_outage"
    async with context.unit_of_work() as uow:
        await claims.set_claims(uow.session, claims.INCIDENT, "inc-1", {})
    assert await component_status(context, api) == "under_maintenance"
    async with context.unit_of_work() as uow:
        await claims.set_claims(uow.session, claims.INCIDENT, "inc-2", {api: "major_outage"})
    assert (await client.post(f"{path}/complete", headers=operator.headers)).status_code == 200
    assert await component_status(context, api) == "major_outage"
