"""The embedded default seeds the runbook's components, once, and only while there are
none; Frontend and Backend API are linked to the local services."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from app.components.models import Component
from app.core.context import AppContext
from app.embedded.seed import seed_local
from tests.components.conftest import create_component, status_events
from tests.factories import IssuedToken
from tests.helpers import audit_events_after, last_audit_seq

RUNBOOK_COMPONENTS = ["Frontend", "Backend API", "Database", "Cache", "File Storage"]


async def test_the_local_seed_creates_the_runbooks_components_once(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    seq = await last_audit_seq(context)
    assert await seed_local(context) is True
    listed = await client.get("/v1/components", headers=operator.headers)
    items = listed.json()["items"]
    assert [c["name"] for c in items] == RUNBOOK_COMPONENTS
    assert {c["name"]: c["services"] for c in items} == {
        "Frontend": ["local/frontend"],
        "Backend API": ["local/backend"],
        "Database": [],
        "Cache": [],
        "File Storage": [],
    }
    assert {c["status"] for c in items} == {"operational"}
    assert all(c["showcase"] for c in items)
    assert await status_events(context) == []
    actions = [e.action for e in await audit_events_after(context, seq)]
    assert actions == ["environment.seed", "component.seed"]

    # a second start seeds nothing, and keeps what operators changed
    await client.patch(
        f"/v1/components/{items[2]['id']}", json={"name": "Primary DB"}, headers=operator.headers
    )
    await client.delete(f"/v1/components/{items[4]['id']}", headers=operator.headers)
    assert await seed_local(context) is False
    async with context.sessionmaker() as session:
        names = sorted((await session.scalars(select(Component.name))).all())
    assert names == sorted(["Frontend", "Backend API", "Primary DB", "Cache"])


async def test_no_seed_when_components_exist(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    await create_component(client, operator, "Storefront")
    assert await seed_local(context) is True  # the environment is new, the components not
    async with context.sessionmaker() as session:
        names = (await session.scalars(select(Component.name))).all()
    assert names == ["Storefront"]


async def test_an_existing_local_environment_still_gets_the_components(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    assert await seed_local(context) is True
    async with context.unit_of_work() as uow:
        for component in (await uow.session.scalars(select(Component))).all():
            await uow.session.delete(component)
    assert await seed_local(context) is False
    listed = await client.get("/v1/components", headers=operator.headers)
    assert [c["name"] for c in listed.json()["items"]] == RUNBOOK_COMPONENTS
