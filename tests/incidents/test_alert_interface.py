"""``open_or_update`` and ``alert_resolved``: what the Alertmanager receiver calls. One
incident per alert group while it is open, severity only ever raised, components merged
and restored, a timeline entry only when something changed, and one incident for
concurrent calls with one key."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from app.auth.principal import Principal
from app.core.context import AppContext
from app.incidents import service
from app.incidents.models import Incident, IncidentUpdateRecord
from tests.incidents.conftest import component_status, events, make_component

ACTOR = Principal.system("alertmanager")


async def _entries(context: AppContext, incident_id: str) -> int:
    async with context.sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(IncidentUpdateRecord)
            .where(IncidentUpdateRecord.incident_id == incident_id)
        )
    return int(count or 0)


async def _fire(
    context: AppContext, components: dict[str, str], severity: str = "P2", key: str = "g1"
) -> tuple[Incident, bool]:
    async with context.unit_of_work() as uow:
        return await service.open_or_update(
            uow,
            context,
            ACTOR,
            dedupe_key=key,
            title="High error rate",
            severity=severity,
            source="alertmanager",
            components=components,
            message="Error rate above 5 %.",
        )


async def _resolved(context: AppContext, key: str = "g1") -> Incident | None:
    async with context.unit_of_work() as uow:
        return await service.alert_resolved(
            uow, context, ACTOR, dedupe_key=key, message="The alert resolved."
        )


async def test_one_incident_per_group_updated_only_on_change(context: AppContext) -> None:
    api = await make_component(context, "Backend API")
    db = await make_component(context, "Database")

    first, created = await _fire(context, {api.id: "degraded_performance"})
    assert created
    assert first.status == "investigating"
    assert first.severity == "P2"
    assert first.impact == "minor"
    assert first.source == "alertmanager"
    assert first.dedupe_key == "g1"
    assert first.ack_due_at is not None
    assert first.resolve_target_at is not None
    assert await component_status(context, api.id) == "degraded_performance"
    assert len(await events(context, "incident.created")) == 1

    again, created = await _fire(context, {api.id: "degraded_performance"})
    assert not created
    assert again.id == first.id
    assert await _entries(context, first.id) == 1  # nothing changed: no entry
    assert await events(context, "incident.updated") == []

    raised, _ = await _fire(
        context, {api.id: "partial_outage", db.id: "degraded_performance"}, "P1"
    )
    assert raised.id == first.id
    assert raised.severity == "P1"
    assert raised.impact == "major"
    assert await component_status(context, api.id) == "partial_outage"
    assert await component_status(context, db.id) == "degraded_performance"
    assert await _entries(context, first.id) == 2

    lower, _ = await _fire(context, {api.id: "degraded_performance"}, "P3")
    assert lower.severity == "P1"  # never lowered
    assert await component_status(context, api.id) == "partial_outage"  # the worse kept
    assert await _entries(context, first.id) == 2

    updated = await events(context, "incident.updated")
    assert [e["severity"] for e in updated] == ["P1"]
    assert {c["name"]: c["status"] for c in updated[0]["components"]} == {
        "Backend API": "partial_outage",
        "Database": "degraded_performance",
    }


async def test_resolved_moves_to_monitoring_and_restores_components(context: AppContext) -> None:
    api = await make_component(context, "Backend API")
    incident, _ = await _fire(context, {api.id: "partial_outage"}, "P1")

    monitoring = await _resolved(context)
    assert monitoring is not None
    assert monitoring.id == incident.id
    assert monitoring.status == "monitoring"
    assert monitoring.monitoring_at is not None
    assert await component_status(context, api.id) == "operational"
    assert await _entries(context, incident.id) == 2
    again = await _resolved(context)  # a re-sent resolution changes nothing
    assert again is not None
    assert again.status == "monitoring"
    assert await _entries(context, incident.id) == 2

    back, created = await _fire(context, {api.id: "partial_outage"}, "P1")  # it came back
    assert not created
    assert back.id == incident.id
    assert back.status == "investigating"
    assert await component_status(context, api.id) == "partial_outage"

    assert await _resolved(context, key="unknown") is None


async def test_a_resolved_incident_frees_its_key(context: AppContext) -> None:
    api = await make_component(context, "Backend API")
    incident, _ = await _fire(context, {api.id: "partial_outage"})
    async with context.unit_of_work() as uow:
        await service.resolve(uow, context, ACTOR, incident.id, message="Fixed.")
    assert await component_status(context, api.id) == "operational"
    assert await _resolved(context) is None  # no open incident has the key

    later, created = await _fire(context, {api.id: "partial_outage"})
    assert created
    assert later.id != incident.id


async def test_an_unknown_component_is_refused(context: AppContext) -> None:
    with pytest.raises(service.UnknownComponent, match="nope"):
        await _fire(context, {"nope": "partial_outage"})


async def test_concurrent_calls_with_one_key_open_one_incident(context: AppContext) -> None:
    api = await make_component(context, "Backend API")
    results = await asyncio.gather(
        *(_fire(context, {api.id: "partial_outage"}, key="burst") for _ in range(8))
    )
    assert sum(created for _, created in results) == 1
    assert len({incident.id for incident, _ in results}) == 1
    async with context.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(Incident))
    assert count == 1


async def test_partly_resolved_eases_or_gives_back_components_only(context: AppContext) -> None:
    api = await make_component(context, "Backend API")
    db = await make_component(context, "Database")
    cache = await make_component(context, "Cache")
    incident, _ = await _fire(context, {api.id: "partial_outage", db.id: "partial_outage"}, "P1")

    async def partly(components: dict[str, str | None]) -> Incident | None:
        async with context.unit_of_work() as uow:
            return await service.alert_partly_resolved(
                uow, context, ACTOR, dedupe_key="g1", components=components, message="Eased."
            )

    eased = await partly({db.id: None, api.id: "degraded_performance", cache.id: None})
    assert eased is not None
    assert eased.id == incident.id
    assert eased.status == "investigating"  # the group still fires
    assert eased.severity == "P1"
    assert await component_status(context, db.id) == "operational"
    assert await component_status(context, api.id) == "degraded_performance"
    assert await _entries(context, incident.id) == 2

    worse = await partly({api.id: "major_outage", db.id: None})  # never made worse
    assert worse is not None
    assert await component_status(context, api.id) == "degraded_performance"
    assert await _entries(context, incident.id) == 2  # nothing changed: no entry

    assert await _resolved(context) is not None
    assert await component_status(context, api.id) == "operational"
    async with context.unit_of_work() as uow:
        await service.resolve(uow, context, ACTOR, incident.id, message="Fixed.")
    assert await partly({api.id: None}) is None  # no open incident has the key
