"""``/v1/components`` over HTTP: create, read, list in order, change with ETags, delete;
the services checked against the environments; every change audited and the public
status revision bumped; who may do what; bad input answered with problems."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select

from app.components import revision
from app.components.models import Component
from app.core.context import AppContext
from tests.components.conftest import create_component, status_events
from tests.factories import IssuedToken
from tests.helpers import audit_events_after, last_audit_seq

PROBLEM = "application/problem+json"
PROCESS_SERVICE = {"driver": "process", "config": {"command": ["{python}", "-c", "pass"]}}


async def make_service(
    client: httpx.AsyncClient, admin: IssuedToken, environment: str, service: str
) -> None:
    response = await client.put(f"/v1/environments/{environment}", json={}, headers=admin.headers)
    assert response.status_code in (200, 201), response.text
    response = await client.put(
        f"/v1/environments/{environment}/services/{service}",
        json=PROCESS_SERVICE,
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text


async def current_revision(context: AppContext) -> int:
    async with context.sessionmaker() as session:
        return await revision.current(session)


def assert_problem(response: httpx.Response, status: int, type_: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.text
    body = response.json()
    assert body["status"] == status
    if type_ is not None:
        assert body["type"] == type_, body


async def test_create_read_change_delete(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken, admin: IssuedToken
) -> None:
    await make_service(client, admin, "production", "backend")
    seq = await last_audit_seq(context)
    before = await current_revision(context)
    created = await client.post(
        "/v1/components",
        json={
            "name": "Backend API",
            "description": "The API.\nCalled by the frontend.",
            "group": "Core",
            "position": 2,
            "services": ["production/backend"],
        },
        headers=operator.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    path = f"/v1/components/{body['id']}"
    assert created.headers["location"] == path
    assert body["status"] == body["manual_status"] == "operational"
    assert body["claims"] == []
    assert body["services"] == ["production/backend"]
    assert body["showcase"] is True
    assert body["group"] == "Core"
    assert await current_revision(context) == before + 1

    read = await client.get(path, headers=operator.headers)
    assert read.status_code == 200
    assert read.json() == body
    tag = read.headers["etag"]
    assert tag == created.headers["etag"]

    changed = await client.patch(
        path,
        json={"description": "Changed.", "group": None, "showcase": False},
        headers={**operator.headers, "If-Match": tag},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["group"] is None
    assert changed.json()["showcase"] is False
    assert changed.json()["description"] == "Changed."
    assert changed.headers["etag"] != tag
    assert await current_revision(context) == before + 2

    stale = await client.patch(
        path, json={"position": 5}, headers={**operator.headers, "If-Match": tag}
    )
    assert_problem(stale, 412, "/problems/precondition-failed")
    stale_delete = await client.delete(path, headers={**operator.headers, "If-Match": tag})
    assert_problem(stale_delete, 412)

    deleted = await client.delete(
        path, headers={**operator.headers, "If-Match": changed.headers["etag"]}
    )
    assert deleted.status_code == 204, deleted.text
    assert_problem(await client.get(path, headers=operator.headers), 404)
    assert await current_revision(context) == before + 3

    audit = await audit_events_after(context, seq)
    done = [(e.action, e.outcome) for e in audit if e.action.startswith("component.")]
    assert done == [
        ("component.create", "success"),
        ("component.update", "success"),
        ("component.update", "failed"),  # the stale PATCH (412)
        ("component.delete", "failed"),  # the stale DELETE (412)
        ("component.delete", "success"),
    ]
    update = next(e for e in audit if e.action == "component.update" and e.outcome == "success")
    assert update.resource_id == body["id"]
    assert update.summary["changes"]["showcase"] == {"from": True, "to": False}
    assert update.actor_token_id == operator.id
    assert await status_events(context) == []  # no status changed


async def test_a_patch_of_nothing_new_changes_nothing(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    component = await create_component(client, operator, "Cache", position=3)
    seq = await last_audit_seq(context)
    before = await current_revision(context)
    same = await client.patch(
        f"/v1/components/{component['id']}",
        json={"position": 3, "status": "operational"},
        headers=operator.headers,
    )
    assert same.status_code == 200, same.text
    assert same.json()["version"] == component["version"]
    assert await current_revision(context) == before
    assert await audit_events_after(context, seq) == []


async def test_the_list_is_ordered_by_group_position_name_and_paginated(
    client: httpx.AsyncClient, operator: IssuedToken, viewer: IssuedToken
) -> None:
    specs = [
        ("Zeta", None, 0),
        ("Alpha", None, 1),
        ("Beta", None, 1),
        ("Database", "Data", 1),
        ("Cache", "Data", 0),
        ("Frontend", "Apps", 5),
        ("Backend API", "Apps", 5),
    ]
    for name, group, position in specs:
        await create_component(client, operator, name, group=group, position=position)
    expected = ["Zeta", "Alpha", "Beta", "Backend API", "Frontend", "Cache", "Database"]
    whole = await client.get("/v1/components", headers=viewer.headers)
    assert [c["name"] for c in whole.json()["items"]] == expected
    assert whole.json()["next_cursor"] is None

    names: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = await client.get(
            "/v1/components", params={"limit": 2, "cursor": cursor}, headers=viewer.headers
        )
        assert page.status_code == 200, page.text
        names += [c["name"] for c in page.json()["items"]]
        pages += 1
        if page.json()["next_cursor"] is None:
            break
        cursor = page.json()["next_cursor"]
        # a component inserted before the cursor's position shifts nothing
        if pages == 1:
            await create_component(client, operator, "Aardvark", position=0)
    assert names == expected
    assert pages == 4


async def test_services_must_exist(
    client: httpx.AsyncClient, operator: IssuedToken, admin: IssuedToken
) -> None:
    await make_service(client, admin, "staging", "frontend")
    refused = await client.post(
        "/v1/components",
        json={"name": "Frontend", "services": ["staging/frontend", "staging/backend"]},
        headers=operator.headers,
    )
    assert_problem(refused, 422)
    assert refused.json()["errors"] == [
        {
            "loc": ["body", "services", 1],
            "msg": "no service 'staging/backend' (environment/service) exists",
            "type": "unknown_service",
        }
    ]
    component = await create_component(client, operator, "Frontend", services=["staging/frontend"])
    patched = await client.patch(
        f"/v1/components/{component['id']}",
        json={"services": ["production/frontend"]},
        headers=operator.headers,
    )
    assert_problem(patched, 422)
    listed = await client.get("/v1/components", headers=operator.headers)
    assert [c["services"] for c in listed.json()["items"]] == [["staging/frontend"]]


async def test_names_are_unique_ignoring_case(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    first = await create_component(client, operator, "Database")
    other = await create_component(client, operator, "File Storage")
    for name in ("Database", "database", "DATABASE"):
        response = await client.post(
            "/v1/components", json={"name": name}, headers=operator.headers
        )
        assert_problem(response, 409, "/problems/component-exists")
    renamed = await client.patch(
        f"/v1/components/{other['id']}", json={"name": "dataBase"}, headers=operator.headers
    )
    assert_problem(renamed, 409, "/problems/component-exists")
    # its own name in another case is a rename, not a clash
    recased = await client.patch(
        f"/v1/components/{first['id']}", json={"name": "DataBase"}, headers=operator.headers
    )
    assert recased.status_code == 200, recased.text
    async with context.sessionmaker() as session:
        assert len((await session.scalars(select(Component))).all()) == 2


async def test_concurrent_creates_of_one_name_make_one_component(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/v1/components", json={"name": "Cache"}, headers=operator.headers)
            for _ in range(4)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, [r.text for r in responses]
    assert set(statuses) == {201, 409}, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.headers["content-type"] == PROBLEM
    async with context.sessionmaker() as session:
        assert len((await session.scalars(select(Component))).all()) == 1


async def test_the_idempotency_key_replays_the_creation(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    headers = {**operator.headers, "Idempotency-Key": "component-cache-1"}
    first = await client.post("/v1/components", json={"name": "Cache"}, headers=headers)
    again = await client.post("/v1/components", json={"name": "Cache"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = await client.post("/v1/components", json={"name": "Other"}, headers=headers)
    assert_problem(other, 422)
    async with context.sessionmaker() as session:
        assert len((await session.scalars(select(Component))).all()) == 1


async def test_viewers_read_and_cannot_change(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    viewer: IssuedToken,
    deployer: IssuedToken,
) -> None:
    component = await create_component(client, operator, "Frontend")
    path = f"/v1/components/{component['id']}"
    for token in (viewer, deployer):
        assert (await client.get("/v1/components", headers=token.headers)).status_code == 200
        assert (await client.get(path, headers=token.headers)).status_code == 200
        for method, url, body in (
            ("POST", "/v1/components", {"name": "Other"}),
            ("PATCH", path, {"status": "major_outage"}),
            ("DELETE", path, None),
        ):
            response = await client.request(method, url, json=body, headers=token.headers)
            assert_problem(response, 403)
    assert (await client.get("/v1/components")).status_code == 401
    unchanged = await client.get(path, headers=viewer.headers)
    assert unchanged.json()["status"] == "operational"
    listed = await client.get("/v1/components", headers=viewer.headers)
    assert [c["name"] for c in listed.json()["items"]] == ["Frontend"]


BAD_CREATES: list[Any] = [
    {},
    {"name": ""},
    {"name": "x" * 101},
    {"name": " Leading space"},
    {"name": "Trailing space "},
    {"name": "Line\nbreak"},
    {"name": "Nul\x00"},
    {"name": 5},
    {"name": None},
    {"name": "A", "status": "down"},
    {"name": "A", "status": None},
    {"name": "A", "position": -1},
    {"name": "A", "position": 100_001},
    {"name": "A", "position": "first"},
    {"name": "A", "group": ""},
    {"name": "A", "group": "g" * 101},
    {"name": "A", "description": "bell\x07"},
    {"name": "A", "description": "d" * 2001},
    {"name": "A", "services": "local/backend"},
    {"name": "A", "services": ["backend"]},
    {"name": "A", "services": ["Local/Backend"]},
    {"name": "A", "services": ["a/b/c"]},
    {"name": "A", "services": ["a/b", "a/b"]},
    {"name": "A", "services": [f"e/s{i}" for i in range(51)]},
    {"name": "A", "showcase": "maybe"},
    {"name": "A", "manual_status": "operational"},
    {"name": "A", "id": "chosen"},
    [],
    "name",
]


async def test_bad_input_is_a_problem_never_a_500(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    for body in BAD_CREATES:
        response = await client.post("/v1/components", json=body, headers=operator.headers)
        assert_problem(response, 422)
    not_json = await client.post(
        "/v1/components",
        content=b"{not json",
        headers={**operator.headers, "content-type": "application/json"},
    )
    assert_problem(not_json, 422)
    component = await create_component(client, operator, "API")
    path = f"/v1/components/{component['id']}"
    for body in (
        {"name": None},
        {"status": None},
        {"services": None},
        {"position": None},
        {"showcase": None},
        {"description": None},
        {"status": "broken"},
        {"unknown": 1},
        {"name": "tab\there"},
    ):
        response = await client.patch(path, json=body, headers=operator.headers)
        assert_problem(response, 422)
        assert "errors" in response.json()
    for headers in ({"If-Match": "no quotes"}, {"If-Match": '"x"\x01'}):
        response = await client.patch(
            path, json={"position": 1}, headers={**operator.headers, **headers}
        )
        assert_problem(response, 422)
    missing = "01900000-0000-7000-8000-000000000000"
    for method, body in (("GET", None), ("PATCH", {"position": 1}), ("DELETE", None)):
        response = await client.request(
            method, f"/v1/components/{missing}", json=body, headers=operator.headers
        )
        assert_problem(response, 404, "/problems/component-not-found")
        malformed = await client.request(
            method, "/v1/components/NOT-AN-ID", json=body, headers=operator.headers
        )
        assert_problem(malformed, 422)
    for params in (
        {"cursor": "!!"},
        {"cursor": "bm90IGpzb24"},  # "not json"
        {"cursor": "WzEsMiwzXQ"},  # [1,2,3]: wrong types
        {"cursor": "x" * 1401},
        {"limit": 0},
        {"limit": 201},
        {"limit": "many"},
        {"group": "Data"},  # no such filter
    ):
        response = await client.get("/v1/components", params=params, headers=operator.headers)
        assert_problem(response, 422)
    unchanged = await client.get(path, headers=operator.headers)
    assert unchanged.json()["version"] == component["version"]
