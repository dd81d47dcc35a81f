"""Response clocks with a fake clock: the check is called with explicit ``now`` values
(the worker's cron job passes the real time), and the outbox is counted."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from sqlalchemy import update

from app.core.context import AppContext
from app.core.settings import IncidentSettings
from app.incidents import clocks, service
from app.incidents.models import Incident, IncidentUpdateRecord
from tests.factories import IssuedToken
from tests.incidents.conftest import declare, events

MINUTE = dt.timedelta(minutes=1)


async def _opened_at(context: AppContext, incident_id: str) -> dt.datetime:
    async with context.sessionmaker() as session:
        incident = await service.get(session, incident_id)
    return incident.created_at


async def _counts(context: AppContext) -> tuple[int, int]:
    return (
        len(await events(context, "incident.sla_warning")),
        len(await events(context, "incident.sla_breached")),
    )


async def test_a_p1_not_acknowledged_in_15_minutes_breaches_once(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    incident = await declare(client, operator, severity="P1")
    opened = await _opened_at(context, incident["id"])
    assert dt.datetime.fromisoformat(incident["ack_due_at"]) == opened + 15 * MINUTE

    assert await service.check_clocks(context, opened + 11 * MINUTE) == []
    assert await _counts(context) == (0, 0)
    warned = await service.check_clocks(context, opened + 12 * MINUTE)  # 80 % of 15 min
    assert warned == [(incident["id"], "ack", "warning")]
    assert await service.check_clocks(context, opened + 14 * MINUTE) == []
    assert await _counts(context) == (1, 0)

    breached = await service.check_clocks(context, opened + 15 * MINUTE + dt.timedelta(seconds=1))
    assert breached == [(incident["id"], "ack", "breached")]
    assert await service.check_clocks(context, opened + 16 * MINUTE) == []  # twice past it
    assert await _counts(context) == (1, 1)
    (data,) = await events(context, "incident.sla_breached")
    assert data["incident_id"] == incident["id"]
    assert data["clock"] == "ack"
    assert data["level"] == "breached"
    assert data["severity"] == "P1"
    assert dt.datetime.fromisoformat(data["due_at"]) == opened + 15 * MINUTE


async def test_an_acknowledged_incident_does_not_breach(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    incident = await declare(client, operator, severity="P1")
    opened = await _opened_at(context, incident["id"])
    acked = await client.post(
        f"/v1/incidents/{incident['id']}/acknowledge", headers=operator.headers
    )
    assert acked.status_code == 200
    assert await service.check_clocks(context, opened + 16 * MINUTE) == []
    assert await _counts(context) == (0, 0)


async def test_a_late_check_emits_the_breach_only(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    incident = await declare(client, operator, severity="P1", acknowledge=True)
    assert incident["acknowledged_at"] is not None
    opened = await _opened_at(context, incident["id"])
    # The update clock (30 min for P1) checked for the first time long after it ran out.
    emitted = await service.check_clocks(context, opened + 40 * MINUTE)
    assert emitted == [(incident["id"], "update", "breached")]
    assert await _counts(context) == (0, 1)


async def test_a_public_update_starts_the_update_clock_again(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    incident = await declare(client, operator, severity="P1", acknowledge=True)
    incident_id = incident["id"]
    opened = await _opened_at(context, incident_id)
    assert await service.check_clocks(context, opened + 31 * MINUTE) == [
        (incident_id, "update", "breached")
    ]
    # An update posted at opened + 35 min (moved there as time would).
    posted = await client.post(
        f"/v1/incidents/{incident_id}/updates",
        json={"message": "Still on it."},
        headers=operator.headers,
    )
    assert posted.status_code == 201
    later = opened + 35 * MINUTE
    async with context.unit_of_work() as uow:
        await uow.session.execute(
            update(IncidentUpdateRecord)
            .where(IncidentUpdateRecord.id == posted.json()["timeline"][-1]["id"])
            .values(created_at=later)
        )
        await uow.session.execute(
            update(Incident)
            .where(Incident.id == incident_id)
            .values(next_update_due_at=later + 30 * MINUTE)
        )
    assert await service.check_clocks(context, later + 29 * MINUTE) == [
        (incident_id, "update", "warning")
    ]
    assert await service.check_clocks(context, later + 30 * MINUTE) == [
        (incident_id, "update", "breached")
    ]
    assert await _counts(context) == (1, 2)  # one breach per deadline


async def test_concurrent_checks_emit_once(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    incident = await declare(client, operator, severity="P1")
    opened = await _opened_at(context, incident["id"])
    results = await asyncio.gather(
        *(service.check_clocks(context, opened + 20 * MINUTE) for _ in range(5))
    )
    assert sum(len(r) for r in results) == 1
    assert await _counts(context) == (0, 1)


async def test_resolved_incidents_have_no_running_clocks(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    incident = await declare(client, operator, severity="P0")
    opened = await _opened_at(context, incident["id"])
    assert incident["ack_due_at"] == incident["created_at"]  # P0: immediately
    resolved = await client.post(
        f"/v1/incidents/{incident['id']}/resolve", headers=operator.headers
    )
    assert resolved.status_code == 200
    assert await service.check_clocks(context, opened + dt.timedelta(days=30)) == []


# -- the policy ------------------------------------------------------------------------


def test_next_business_day_in_the_business_time_zone() -> None:
    berlin = IncidentSettings(business_timezone="Europe/Berlin", business_day_start="09:00")
    friday_evening = dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC)
    assert clocks.next_business_day(friday_evening, berlin) == dt.datetime(
        2026,
        12,
        7,
        8,
        0,
        tzinfo=dt.UTC,  # Monday 09:00 in Berlin (UTC+1)
    )
    tuesday_early = dt.datetime(2026, 12, 8, 3, 0, tzinfo=dt.UTC)
    assert clocks.next_business_day(tuesday_early, berlin) == dt.datetime(
        2026, 12, 9, 8, 0, tzinfo=dt.UTC
    )
    utc = IncidentSettings()
    saturday = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
    assert clocks.due(utc, "ack", "P3", saturday) == dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)


def test_the_runbook_response_times_are_the_defaults() -> None:
    policy = IncidentSettings()
    start = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)
    assert clocks.due(policy, "ack", "P0", start) == start
    assert clocks.due(policy, "ack", "P1", start) == start + 15 * MINUTE
    assert clocks.due(policy, "ack", "P2", start) == start + 60 * MINUTE
    assert clocks.due(policy, "ack", "P3", start) == dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
    custom = IncidentSettings(ack_p1="5m", resolve_p2="2d")
    assert clocks.due(custom, "ack", "P1", start) == start + 5 * MINUTE
    assert clocks.due(custom, "resolve", "P2", start) == start + dt.timedelta(days=2)


@pytest.mark.parametrize(
    "values",
    [
        {"ack_p1": "15 minutes"},
        {"ack_p1": "-5m"},
        {"warning_share": 1.5},
        {"business_timezone": "Mars/Olympus"},
        {"business_day_start": "25:00"},
        {"auto_open_severity": "P9"},
    ],
)
def test_a_bad_policy_is_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="validation error"):
        IncidentSettings.model_validate(values)


def test_the_worker_runs_the_clock_check_every_30_seconds() -> None:
    from app.core.settings import Settings
    from workers.main import cron_jobs

    (job,) = [j for j in cron_jobs(Settings()) if j.name.endswith("check_incident_clocks")]
    assert job.second == {0, 30}
    assert job.unique
