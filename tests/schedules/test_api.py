"""``/v1/schedules`` through the API: create, read, list, change and delete; the
problems (401/403/404/409/412/422) and the audit trail of each change."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import httpx
import pytest

from app.core.context import AppContext
from app.schedules import service
from tests.factories import IssuedToken
from tests.helpers import audit_events_after, last_audit_seq
from tests.schedules.conftest import NOOP, body, create

# The API's rules; the firing's storage runs on both backends (test_firing).
pytestmark = pytest.mark.one_backend("sqlite")


async def test_create_read_list(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken, viewer: IssuedToken
) -> None:
    seq = await last_audit_seq(context)
    payload = body(timezone="Europe/Berlin", parameters={"label": "nightly"})
    keyed = {**operator.headers, "Idempotency-Key": "nightly-1"}
    response = await client.post("/v1/schedules", json=payload, headers=keyed)
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["Location"] == f"/v1/schedules/{created['id']}"
    assert response.headers["ETag"] == f'"{created["id"]}.1"'
    assert created["origin"] == "api"
    assert created["enabled"] is True
    assert created["last_slot_at"] is None
    assert created["last_run_id"] is None
    assert created["recent_slots"] == []
    assert created["created_by"] == f"token:{operator.id}"
    # The next 04:00 in Berlin, in UTC.
    next_run = dt.datetime.fromisoformat(created["next_run_at"])
    local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (4, 0)
    assert dt.timedelta(0) < next_run - dt.datetime.now(dt.UTC) <= dt.timedelta(days=1)

    replay = await client.post("/v1/schedules", json=payload, headers=keyed)
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == created

    read = await client.get(f"/v1/schedules/{created['id']}", headers=viewer.headers)
    assert read.status_code == 200
    assert read.json() == created
    assert read.headers["ETag"] == response.headers["ETag"]

    second = await create(client, operator, body("weekly", cron="@weekly"))
    page = await client.get("/v1/schedules", params={"limit": 1}, headers=viewer.headers)
    assert page.status_code == 200
    first_page = page.json()
    assert [s["id"] for s in first_page["items"]] == [second["id"]]
    assert first_page["next_cursor"]
    rest = await client.get(
        "/v1/schedules",
        params={"limit": 1, "cursor": first_page["next_cursor"]},
        headers=viewer.headers,
    )
    assert [s["id"] for s in rest.json()["items"]] == [created["id"]]
    assert rest.json()["next_cursor"] is None
    other = await client.get(
        "/v1/schedules", params={"runbook": "test-schedule-count"}, headers=viewer.headers
    )
    assert other.json() == {"items": [], "next_cursor": None}

    audit = await audit_events_after(context, seq, action="schedule.create")
    assert [(e.resource_id, e.actor_token_id) for e in audit] == [
        (created["id"], operator.id),
        (second["id"], operator.id),
    ]
    assert audit[0].summary["parameters"] == ["label"]  # names, not values


async def test_change_with_if_match_and_delete(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    created = await create(client, operator, body())
    path = f"/v1/schedules/{created['id']}"
    etag = f'"{created["id"]}.1"'
    off = await client.patch(
        path, json={"enabled": False}, headers={**operator.headers, "If-Match": etag}
    )
    assert off.status_code == 200, off.text
    assert off.json()["enabled"] is False
    assert off.json()["next_run_at"] is None
    assert off.headers["ETag"] == f'"{created["id"]}.2"'

    stale = await client.patch(
        path, json={"enabled": True}, headers={**operator.headers, "If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"

    on = await client.patch(
        path,
        json={"enabled": True, "cron": "*/10 * * * *", "name": "often"},
        headers={**operator.headers, "If-Match": off.headers["ETag"]},
    )
    assert on.status_code == 200, on.text
    changed = on.json()
    assert (changed["name"], changed["cron"], changed["enabled"]) == ("often", "*/10 * * * *", True)
    next_run = dt.datetime.fromisoformat(changed["next_run_at"])
    assert next_run.minute % 10 == 0
    assert next_run.second == 0
    assert dt.timedelta(0) < next_run - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=10)

    stale_delete = await client.delete(path, headers={**operator.headers, "If-Match": etag})
    assert stale_delete.status_code == 412
    seq = await last_audit_seq(context)
    deleted = await client.delete(path, headers=operator.headers)
    assert deleted.status_code == 204
    assert (await client.get(path, headers=operator.headers)).status_code == 404
    assert (await client.delete(path, headers=operator.headers)).status_code == 404
    audit = await audit_events_after(context, seq)
    assert [e.action for e in audit] == ["schedule.delete"]


async def test_name_taken_is_409(client: httpx.AsyncClient, operator: IssuedToken) -> None:
    await create(client, operator, body("nightly"))
    again = await client.post("/v1/schedules", json=body("nightly"), headers=operator.headers)
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/schedule-name-taken"
    other = await create(client, operator, body("other"))
    renamed = await client.patch(
        f"/v1/schedules/{other['id']}", json={"name": "nightly"}, headers=operator.headers
    )
    assert renamed.status_code == 409


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"cron": "0 25 * * *"}, "cron", "hour field '25'"),
        ({"cron": "* * * *"}, "cron", "5 fields"),
        ({"cron": "0 0 30 2 *"}, "cron", "matches no date"),
        ({"timezone": "Mars/Olympus"}, "timezone", "not an IANA time zone"),
        ({"runbook": "no-such-runbook"}, "runbook", "no runbook 'no-such-runbook'"),
        ({"parameters": {"label": 7}}, "parameters", ""),
        ({"parameters": {"unknown": "x"}}, "parameters", ""),
        ({"enabled": "yes"}, "enabled", ""),
        ({"surprise": 1}, "surprise", ""),
        ({"name": "Not A Name"}, "name", ""),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    change: dict[str, object],
    field: str,
    message: str,
) -> None:
    response = await client.post(
        "/v1/schedules", json={**body(), **change}, headers=operator.headers
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert any(error["loc"][:2] == ["body", field] for error in problem["errors"]), problem
    assert message in str(problem)


async def test_bad_parameters_on_change_are_422(
    client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    created = await create(client, operator, body())
    response = await client.patch(
        f"/v1/schedules/{created['id']}",
        json={"runbook": "test-schedule-count"},  # its `count` is required
        headers=operator.headers,
    )
    assert response.status_code == 422, response.text
    response = await client.patch(
        f"/v1/schedules/{created['id']}",
        json={"runbook": "test-schedule-count", "parameters": {"count": 3}},
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text


async def test_roles(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    operator: IssuedToken,
    viewer: IssuedToken,
) -> None:
    assert (await client.get("/v1/schedules")).status_code == 401
    refused = await client.post("/v1/schedules", json=body(), headers=viewer.headers)
    assert refused.status_code == 403
    # An operator cannot schedule what only an admin may start.
    seq = await last_audit_seq(context)
    admin_only = body("rotate", runbook="test-schedule-admin")
    too_low = await client.post("/v1/schedules", json=admin_only, headers=operator.headers)
    assert too_low.status_code == 403, too_low.text
    assert "admin" in too_low.json()["detail"]
    denied = await audit_events_after(context, seq, action="auth.denied")
    assert [e.summary["reason"] for e in denied] == ["runbook_role"]
    created = await create(client, admin, admin_only)
    assert created["runbook"] == "test-schedule-admin"
    # ... nor change a schedule into one.
    mine = await create(client, operator, body("mine"))
    change = await client.patch(
        f"/v1/schedules/{mine['id']}",
        json={"runbook": "test-schedule-admin"},
        headers=operator.headers,
    )
    assert change.status_code == 403
    for method, path in (
        ("PATCH", f"/v1/schedules/{mine['id']}"),
        ("DELETE", f"/v1/schedules/{mine['id']}"),
    ):
        response = await client.request(method, path, json={}, headers=viewer.headers)
        assert response.status_code == 403, (method, path)
    slots = await client.get(f"/v1/schedules/{mine['id']}/slots", headers=viewer.headers)
    assert slots.status_code == 200
    assert slots.json() == {"items": [], "next_cursor": None}


async def test_unknown_schedule_is_404(client: httpx.AsyncClient, operator: IssuedToken) -> None:
    missing = "0193f0c2-5a4e-7d1c-9b2a-3c4d5e6f7a8b"
    for method, path in (
        ("GET", f"/v1/schedules/{missing}"),
        ("PATCH", f"/v1/schedules/{missing}"),
        ("DELETE", f"/v1/schedules/{missing}"),
        ("GET", f"/v1/schedules/{missing}/slots"),
    ):
        response = await client.request(
            method, path, json={} if method == "PATCH" else None, headers=operator.headers
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["type"] == "/problems/schedule-not-found"


async def test_the_etag_is_the_revision(client: httpx.AsyncClient, operator: IssuedToken) -> None:
    created = await create(client, operator, body(runbook=NOOP))
    assert service.etag  # the service decides the tag; the API shows it
    response = await client.get(f"/v1/schedules/{created['id']}", headers=operator.headers)
    assert response.headers["ETag"] == f'"{created["id"]}.1"'
