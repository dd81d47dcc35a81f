"""The scheduler with an explicit ``now``: windows start on time, end into verifying,
complete once their environments' services are not unhealthy (or at the verification
timeout); windows it does not run are left alone; a pass is idempotent. And the worker
cron job runs it."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
from sqlalchemy import update

from app.core.context import AppContext
from app.core.settings import Settings
from app.environments.models import Service
from app.maintenances import service
from tests.factories import IssuedToken, sample_service
from tests.helpers import audit_events_after, free_port, last_audit_seq
from tests.maintenances.conftest import (
    add_component,
    add_environment,
    component_status,
    events,
    schedule,
    window_body,
)
from workers.main import create_worker, cron_jobs, stop_worker
from workers.maintenances import schedule_maintenances

HOUR = dt.timedelta(hours=1)
SECOND = dt.timedelta(seconds=1)


async def _status(client: httpx.AsyncClient, token: IssuedToken, window_id: str) -> str:
    response = await client.get(f"/v1/maintenances/{window_id}", headers=token.headers)
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def test_windows_start_and_end_on_time(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    database = await add_component(context, "Database")
    start = (dt.datetime.now(dt.UTC) + HOUR).replace(microsecond=0)
    end = start + HOUR
    window = await schedule(client, operator, window_body(start, end, components=[database]))
    by_hand = await schedule(
        client, operator, window_body(start, end, title="by hand", auto_transition=False)
    )
    cancelled = await schedule(client, operator, window_body(start, end, title="called off"))
    path = f"/v1/maintenances/{cancelled['id']}/cancel"
    assert (await client.post(path, headers=operator.headers)).status_code == 200

    done = await service.tick(context, start - SECOND)
    assert done.counts() == {"started": 0, "verifying": 0, "completed": 0}
    assert await _status(client, operator, window["id"]) == "scheduled"

    done = await service.tick(context, start)
    assert done.started == [window["id"]]
    assert await _status(client, operator, window["id"]) == "in_progress"
    assert await component_status(context, database) == "under_maintenance"
    # A second pass (another worker, the next period) changes nothing.
    assert (await service.tick(context, start + SECOND)).counts() == {
        "started": 0,
        "verifying": 0,
        "completed": 0,
    }
    # No environments: it is verified at once, in the same pass that ends it.
    done = await service.tick(context, end)
    assert (done.verifying, done.completed) == ([window["id"]], [window["id"]])
    body = (await client.get(f"/v1/maintenances/{window['id']}", headers=operator.headers)).json()
    assert body["status"] == "completed"
    assert [u["status"] for u in body["updates"]] == ["in_progress", "verifying", "completed"]
    assert await component_status(context, database) == "operational"
    assert (await service.tick(context, end + HOUR)).counts() == {
        "started": 0,
        "verifying": 0,
        "completed": 0,
    }
    assert await _status(client, operator, by_hand["id"]) == "scheduled"
    assert await _status(client, operator, cancelled["id"]) == "cancelled"
    started = [e for e in await events(context) if e.type == "maintenance.started"]
    completed = [e for e in await events(context) if e.type == "maintenance.completed"]
    assert [e.data["maintenance_id"] for e in started] == [window["id"]]
    assert [e.data["maintenance_id"] for e in completed] == [window["id"]]
    assert completed[0].data["components"][0]["status"] == "operational"


async def test_a_missed_window_is_started_and_ended_in_one_pass(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    start = dt.datetime.now(dt.UTC) + HOUR
    window = await schedule(client, operator, window_body(start, start + HOUR))
    done = await service.tick(context, start + 2 * HOUR)
    assert (done.started, done.verifying, done.completed) == ([window["id"]],) * 3
    assert [e.type for e in await events(context)] == [
        "maintenance.scheduled",
        "maintenance.started",
        "maintenance.completed",
    ]


async def test_verifying_waits_for_unhealthy_services(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    operator: IssuedToken,
) -> None:
    await add_environment(client, admin, "production")
    response = await client.put(
        "/v1/environments/production/services/backend",
        json=sample_service(free_port()),
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    start = dt.datetime.now(dt.UTC) + HOUR
    end = start + HOUR
    first = await schedule(client, operator, window_body(start, end, environments=["production"]))
    second = await schedule(
        client, operator, window_body(start, end, title="second", environments=["production"])
    )
    await service.tick(context, start)
    await _health(context, "unhealthy")
    done = await service.tick(context, end)
    assert sorted(done.verifying) == sorted([first["id"], second["id"]])
    assert done.completed == []
    assert await _status(client, operator, first["id"]) == "verifying"
    # An operator may end the verification.
    path = f"/v1/maintenances/{second['id']}/complete"
    assert (await client.post(path, headers=operator.headers)).status_code == 200

    assert (await service.tick(context, end + 10 * SECOND)).completed == []
    await _health(context, "healthy")
    assert (await service.tick(context, end + 20 * SECOND)).completed == [first["id"]]
    assert await _status(client, operator, first["id"]) == "completed"


async def test_verifying_ends_at_the_timeout_publishing_no_service_name(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    operator: IssuedToken,
) -> None:
    """Every maintenance update is public: the completion message names no environment
    or service; the ones still unhealthy are in the audit trail."""
    await add_environment(client, admin, "production")
    response = await client.put(
        "/v1/environments/production/services/payments-ledger",
        json=sample_service(free_port()),
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    start = dt.datetime.now(dt.UTC) + HOUR
    end = start + HOUR
    window = await schedule(client, operator, window_body(start, end, environments=["production"]))
    await _health(context, "unhealthy")
    await service.tick(context, start)
    await service.tick(context, end)
    limit = dt.timedelta(seconds=context.settings.maintenances.verify_timeout_seconds)
    assert (await service.tick(context, end + limit - SECOND)).completed == []
    seq = await last_audit_seq(context)
    assert (await service.tick(context, end + limit)).completed == [window["id"]]
    body = (await client.get(f"/v1/maintenances/{window['id']}", headers=operator.headers)).json()
    assert body["status"] == "completed"
    last = body["updates"][-1]["body"]
    assert "did not confirm" in last, last
    assert "payments-ledger" not in last, last
    assert "production" not in last, last
    for path in ("/api/v2/scheduled-maintenances.json", "/status"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert "did not confirm" in page.text or path == "/status", path
        assert "payments-ledger" not in page.text, path
    (audited,) = await audit_events_after(context, seq, action="maintenance.unverified")
    assert audited.resource_id == window["id"]
    assert audited.summary["unhealthy"] == ["production/payments-ledger"]
    assert audited.summary["verify_timeout_seconds"] == int(limit.total_seconds())


async def _health(context: AppContext, status: str) -> None:
    async with context.unit_of_work() as uow:
        await uow.session.execute(update(Service).values(health_status=status))


def test_the_worker_runs_the_scheduler(settings: Settings) -> None:
    names = [job.name for job in cron_jobs(settings)]
    assert "cron:schedule_maintenances" in names
    off = settings.model_copy(
        update={
            "maintenances": settings.maintenances.model_copy(update={"schedule_enabled": False})
        }
    )
    assert "cron:schedule_maintenances" not in [job.name for job in cron_jobs(off)]


async def test_the_cron_job_starts_a_window_whose_time_came(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    database = await add_component(context, "Database")
    now = dt.datetime.now(dt.UTC)
    window = await schedule(
        client, operator, window_body(now - HOUR, now + HOUR, components=[database])
    )
    counts = await schedule_maintenances({"context": context})  # type: ignore[typeddict-item]
    assert counts == {"started": 1, "verifying": 0, "completed": 0}
    assert await _status(client, operator, window["id"]) == "in_progress"
    assert await component_status(context, database) == "under_maintenance"


async def test_a_real_worker_starts_a_window(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken, settings: Settings
) -> None:
    """A real arq worker runs the job every period (here each second)."""
    now = dt.datetime.now(dt.UTC)
    window = await schedule(client, operator, window_body(now - HOUR, now + HOUR))
    every_second = settings.model_copy(
        update={
            "maintenances": settings.maintenances.model_copy(update={"schedule_every_seconds": 1})
        }
    )
    arq_worker = create_worker(every_second, handle_signals=False, poll_delay=0.02)
    task = asyncio.create_task(arq_worker.main())
    try:
        for _ in range(200):
            if await _status(client, operator, window["id"]) == "in_progress":
                break
            await asyncio.sleep(0.1)
    finally:
        await stop_worker(arq_worker, task)
    assert await _status(client, operator, window["id"]) == "in_progress"


async def test_concurrent_passes_start_a_window_once(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    """Two workers' passes (and an operator) at once: one start, one event."""
    database = await add_component(context, "Database")
    start = dt.datetime.now(dt.UTC) + HOUR
    window = await schedule(
        client, operator, window_body(start, start + HOUR, components=[database])
    )
    path = f"/v1/maintenances/{window['id']}/start"
    first, second, by_hand = await asyncio.gather(
        service.tick(context, start),
        service.tick(context, start),
        client.post(path, headers=operator.headers),
    )
    starts = len(first.started) + len(second.started) + (by_hand.status_code == 200)
    assert starts == 1, (first, second, by_hand.text)
    if by_hand.status_code != 200:
        assert by_hand.status_code == 409
    assert [e.type for e in await events(context)] == [
        "maintenance.scheduled",
        "maintenance.started",
    ]
    assert await component_status(context, database) == "under_maintenance"
