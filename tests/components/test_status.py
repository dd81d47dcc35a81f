"""A component's status: the operator's (PATCH ``status``) combined with the claims of
open incidents and in-progress windows (``claims.set_claims``) as the worst of them;
``component.status_changed`` emitted exactly once per change of what readers see."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select

from app.components import claims
from app.components.models import Component
from app.core.context import AppContext
from tests.components.conftest import create_component, status_events
from tests.factories import IssuedToken


def stamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def set_claims(context: AppContext, source_type: str, source_id: str, **by_id: str) -> None:
    async with context.unit_of_work() as uow:
        await claims.set_claims(uow.session, source_type, source_id, by_id)


async def patch_status(
    client: httpx.AsyncClient, token: IssuedToken, component_id: str, status: str
) -> dict[str, Any]:
    response = await client.patch(
        f"/v1/components/{component_id}", json={"status": status}, headers=token.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_status_patch_emits_exactly_one_event(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    component = await create_component(client, operator, "Backend API", group="Core")
    read = await client.get(f"/v1/components/{component['id']}", headers=operator.headers)
    tag = read.headers["etag"]
    response = await client.patch(
        f"/v1/components/{component['id']}",
        json={"status": "partial_outage", "description": "Slow answers."},
        headers={**operator.headers, "If-Match": tag},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == body["manual_status"] == "partial_outage"
    assert stamp(body["status_changed_at"]) > stamp(component["status_changed_at"])
    assert response.headers["etag"] != tag
    events = await status_events(context)
    assert len(events) == 1
    (event,) = events
    assert event["component_id"] == component["id"]
    assert event["name"] == "Backend API"
    assert event["group"] == "Core"
    assert (event["old_status"], event["new_status"]) == ("operational", "partial_outage")
    assert event["links"] == {"self": f"/v1/components/{component['id']}"}

    # the same status again, and changes of other fields: no event
    await patch_status(client, operator, component["id"], "partial_outage")
    renamed = await client.patch(
        f"/v1/components/{component['id']}", json={"name": "API"}, headers=operator.headers
    )
    assert renamed.status_code == 200
    assert len(await status_events(context)) == 1

    await patch_status(client, operator, component["id"], "operational")
    events = await status_events(context)
    assert [(e["old_status"], e["new_status"], e["name"]) for e in events] == [
        ("operational", "partial_outage", "Backend API"),
        ("partial_outage", "operational", "API"),
    ]


async def test_a_refused_patch_emits_nothing(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    component = await create_component(client, operator, "Cache")
    await create_component(client, operator, "Database")
    response = await client.patch(
        f"/v1/components/{component['id']}",
        json={"status": "major_outage", "name": "database"},  # the name is taken
        headers=operator.headers,
    )
    assert response.status_code == 409, response.text
    stale = await client.patch(
        f"/v1/components/{component['id']}",
        json={"status": "major_outage"},
        headers={**operator.headers, "If-Match": '"stale"'},
    )
    assert stale.status_code == 412, stale.text
    assert await status_events(context) == []
    read = await client.get(f"/v1/components/{component['id']}", headers=operator.headers)
    assert read.json()["status"] == "operational"


async def test_the_operator_status_and_the_claims_combine_as_the_worst(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    component = await create_component(client, operator, "Backend API")
    cid = component["id"]
    path = f"/v1/components/{cid}"

    # an incident claims partial_outage: readers see it, the operator's status stays
    await set_claims(context, claims.INCIDENT, "inc-1", **{cid: "partial_outage"})
    read = (await client.get(path, headers=operator.headers)).json()
    assert (read["status"], read["manual_status"]) == ("partial_outage", "operational")
    assert [(c["source_type"], c["source_id"], c["status"]) for c in read["claims"]] == [
        ("incident", "inc-1", "partial_outage")
    ]
    assert len(await status_events(context)) == 1

    # a milder operator status changes nothing readers see: no event
    body = await patch_status(client, operator, cid, "degraded_performance")
    assert (body["status"], body["manual_status"]) == ("partial_outage", "degraded_performance")
    assert len(await status_events(context)) == 1

    # a worse one wins: one event
    body = await patch_status(client, operator, cid, "major_outage")
    assert (body["status"], body["manual_status"]) == ("major_outage", "major_outage")
    events = await status_events(context)
    assert len(events) == 2
    assert (events[-1]["old_status"], events[-1]["new_status"]) == (
        "partial_outage",
        "major_outage",
    )

    # a maintenance window's claim ranks below an outage
    await set_claims(context, claims.MAINTENANCE, "mnt-1", **{cid: "under_maintenance"})
    assert len(await status_events(context)) == 2

    # the operator steps back: the incident's claim is what remains worst
    body = await patch_status(client, operator, cid, "operational")
    assert (body["status"], body["manual_status"]) == ("partial_outage", "operational")
    assert {c["source_type"] for c in body["claims"]} == {"incident", "maintenance"}

    # the incident ends: the window's claim remains
    await set_claims(context, claims.INCIDENT, "inc-1")
    read = (await client.get(path, headers=operator.headers)).json()
    assert read["status"] == "under_maintenance"

    # the window ends: back to the operator's status
    await set_claims(context, claims.MAINTENANCE, "mnt-1")
    read = (await client.get(path, headers=operator.headers)).json()
    assert (read["status"], read["claims"]) == ("operational", [])
    events = await status_events(context)
    assert [(e["old_status"], e["new_status"]) for e in events] == [
        ("operational", "partial_outage"),
        ("partial_outage", "major_outage"),
        ("major_outage", "partial_outage"),
        ("partial_outage", "under_maintenance"),
        ("under_maintenance", "operational"),
    ]
    async with context.sessionmaker() as session:
        row = await session.scalar(select(Component).where(Component.id == cid))
    assert row is not None
    assert (row.status, row.manual_status) == ("operational", "operational")


async def test_a_claimed_component_cannot_be_deleted(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    component = await create_component(client, operator, "Database")
    path = f"/v1/components/{component['id']}"
    await set_claims(context, claims.INCIDENT, "inc-9", **{component["id"]: "major_outage"})
    refused = await client.delete(path, headers=operator.headers)
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/component-claimed"
    assert refused.json()["claims"] == [{"source_type": "incident", "source_id": "inc-9"}]
    assert (await client.get(path, headers=operator.headers)).status_code == 200
    await set_claims(context, claims.INCIDENT, "inc-9")
    assert (await client.delete(path, headers=operator.headers)).status_code == 204


async def test_created_with_a_status_it_shows_it_without_an_event(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    component = await create_component(client, operator, "File Storage", status="major_outage")
    assert (component["status"], component["manual_status"]) == ("major_outage", "major_outage")
    assert await status_events(context) == []
    body = await patch_status(client, operator, component["id"], "operational")
    assert body["status"] == "operational"
    assert [(e["old_status"], e["new_status"]) for e in await status_events(context)] == [
        ("major_outage", "operational")
    ]
