"""Scale-out without faults: the cluster of :mod:`tests.scale.cluster` (two API processes,
three worker processes, PostgreSQL, Redis) takes 300 deployments across 5 environments,
200 health checks, 100 runbook runs, an Alertmanager burst and a schedule firing every
minute, with every event sent to 3 webhook endpoints.

It passes when no service ever had two deployments in progress at once (sampled while
running, and checked afterwards on the runs' start and end times), every run ends, every
schedule slot fired exactly once (one slot row and one run per minute that passed), every
alert was stored once, and every event reached the three endpoints. Counts and
throughput are printed, not asserted.

Time bound: about 120 s on 2 cores. ``FORMULA_OPS_SCALE_FACTOR`` (default 1) multiplies
the request counts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.alerts.payloads import group
from tests.scale.cluster import (
    Cluster,
    Ledger,
    WebhookReceiver,
    careful_post,
    check_deliveries,
    create_environments,
    delivery_rows,
    register_endpoints,
    wait_delivered,
    wait_sealed,
    wait_terminal,
)

# One after the other on one xdist worker: two clusters at once on 2 cores would slow each
# other past their time bounds.
pytestmark = [pytest.mark.slow, pytest.mark.early, pytest.mark.xdist_group("scale")]

FACTOR = float(os.environ.get("FORMULA_OPS_SCALE_FACTOR", "1"))
DEPLOYMENTS = int(300 * FACTOR)
HEALTH_CHECKS = int(200 * FACTOR)
RUNBOOK_RUNS = int(100 * FACTOR)
ALERT_GROUPS = 20
ALERTS_PER_GROUP = 3
CONCURRENCY = 8
ENVIRONMENTS = ["prod", "staging", "qa", "dev", "demo"]
SERVICES = ["backend", "frontend", "jobs"]
RUNBOOK = "test-schedule-noop"


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    found = WebhookReceiver()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    # The schedule job looks for due slots every 5 s (default 10 s).
    started = Cluster(FORMULA_OPS_SCHEDULES__FIRE_EVERY_SECONDS="5")
    await asyncio.to_thread(started.start)
    try:
        yield started
    finally:
        await asyncio.to_thread(started.close)


def requests() -> list[tuple[str, str, dict[str, Any]]]:
    """Every request, interleaved: deployments round-robin over the services."""
    targets = [(env, service) for env in ENVIRONMENTS for service in SERVICES]
    deployments = [
        (
            "deployment",
            "/v1/deployments",
            {
                "environment": targets[n % len(targets)][0],
                "service": targets[n % len(targets)][1],
                "version": f"2.0.{n}",
            },
        )
        for n in range(DEPLOYMENTS)
    ]
    checks = [("health_check", "/v1/health-checks", {})] * HEALTH_CHECKS
    runs = [
        ("runbook", f"/v1/runbooks/{RUNBOOK}/runs", {"parameters": {"label": "load"}})
    ] * RUNBOOK_RUNS
    mixed: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(max(len(deployments), len(checks), len(runs))):
        for part in (deployments, checks, runs):
            if n < len(part):
                mixed.append(part[n])
    return mixed


async def sample_active(cluster: Cluster, stop: asyncio.Event) -> tuple[int, int, list[Any]]:
    """Sample the deployments in progress per service until ``stop``: (samples, the
    largest number of services busy at once, every service seen with two)."""
    samples, busiest, broken = 0, 0, []
    while not stop.is_set():
        rows = await asyncio.to_thread(
            cluster.query,
            "SELECT t.environment, t.service, count(*) FROM deployment_target t "
            "JOIN run r ON r.id = t.deployment_id WHERE r.status = 'in_progress' "
            "GROUP BY t.environment, t.service",
        )
        samples += 1
        busiest = max(busiest, len(rows))
        broken += [row for row in rows if row[2] > 1]
        await asyncio.sleep(0.2)
    return samples, busiest, broken


def overlaps(rows: list[tuple[str, str, dt.datetime, dt.datetime]]) -> list[Any]:
    """Pairs of one service's deployments whose [started, finished] intervals overlap."""
    by_service: dict[tuple[str, str], list[tuple[dt.datetime, dt.datetime]]] = {}
    for env, service, started, finished in rows:
        by_service.setdefault((env, service), []).append((started, finished))
    found = []
    for key, spans in by_service.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                found.append((key, end, start))
    return found


async def test_the_cluster_scales_out_and_keeps_its_rules(
    cluster: Cluster, receiver: WebhookReceiver
) -> None:
    began = time.monotonic()
    headers = {"Authorization": f"Bearer {await asyncio.to_thread(cluster.token)}"}
    async with httpx.AsyncClient(base_url=cluster.apis[0].url, timeout=30) as admin:
        await create_environments(admin, headers, ENVIRONMENTS, SERVICES, receiver.health_url)
        endpoints = await register_endpoints(admin, headers, receiver, 3)
        response = await admin.post(
            "/v1/tokens",
            json={"name": "alertmanager", "role": "operator", "scope": "alerts"},
            headers={**headers, "Idempotency-Key": "alertmanager-token"},
        )
        assert response.status_code == 201, response.text
        alerts_headers = {"Authorization": f"Bearer {response.json()['token']}"}
        response = await admin.post(
            "/v1/schedules",
            json={
                "name": "every-minute",
                "runbook": RUNBOOK,
                "cron": "* * * * *",
                "parameters": {"label": "scheduled"},
            },
            headers={**headers, "Idempotency-Key": "every-minute"},
        )
        assert response.status_code == 201, response.text
        schedule_id = response.json()["id"]
    schedule_from = dt.datetime.now(dt.UTC)

    ledger = Ledger()
    apis = [httpx.AsyncClient(base_url=api.url, timeout=30) for api in cluster.apis]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_active(cluster, stop))
    queue = list(enumerate(requests()))
    load = time.monotonic()

    async def client() -> None:
        while queue:
            number, (kind, path, body) = queue.pop(0)
            await careful_post(apis, number, path, body, headers, kind, ledger)

    async def alert_burst() -> list[int]:
        statuses = []
        for resend in range(2):  # Alertmanager sends a group again at its interval
            for n in range(ALERT_GROUPS):
                payload = group(
                    f"ScaleAlert{n}", alerts=ALERTS_PER_GROUP, severity="warning", resend=str(0)
                )
                response = await apis[(n + resend) % 2].post(
                    "/v1/alerts/alertmanager", json=payload, headers=alerts_headers
                )
                statuses.append(response.status_code)
        return statuses

    try:
        burst = asyncio.create_task(alert_burst())
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        accepted = time.monotonic() - load
        alert_statuses = await burst
        ids = [o.resource_id for o in ledger.outcomes if o.resource_id]
        assert len(ids) == len(ledger.outcomes) == len(set(ids)), Counter(
            o.status for o in ledger.outcomes
        )
        statuses = await wait_terminal(cluster, ids, within=240)
        finished = time.monotonic() - load
    finally:
        stop.set()
        samples, busiest, broken = await sampler
        for http in apis:
            await http.aclose()

    # One deployment per service at a time: sampled while running, and on the runs'
    # start and end times afterwards.
    assert not broken, f"two deployments of one service in progress at once: {broken[:10]}"
    spans = await asyncio.to_thread(
        cluster.query,
        "SELECT t.environment, t.service, r.started_at, r.finished_at FROM deployment_target t "
        "JOIN run r ON r.id = t.deployment_id WHERE r.started_at IS NOT NULL",
    )
    assert len(spans) == DEPLOYMENTS
    assert not overlaps(spans), overlaps(spans)[:10]

    # Every alert was answered and stored once.
    assert set(alert_statuses) <= {200, 201, 202}, Counter(alert_statuses)
    ((alerts, received),) = await asyncio.to_thread(
        cluster.query, "SELECT count(*), sum(received_count) FROM alert"
    )
    assert alerts == ALERT_GROUPS * ALERTS_PER_GROUP, alerts

    # Every minute that passed fired the schedule once: one slot, one run.
    last_minute = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    minutes = int((last_minute - schedule_from).total_seconds() // 60) + 1
    expected = [last_minute - dt.timedelta(minutes=n) for n in range(minutes)]
    expected = [m for m in expected if m > schedule_from]
    deadline = time.monotonic() + 30
    while True:
        slots = await asyncio.to_thread(
            cluster.query,
            "SELECT slot_at, status, run_id FROM schedule_slot WHERE schedule_id = %s",
            schedule_id,
        )
        if {s[0] for s in slots} >= set(expected) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert {s[0] for s in slots} >= set(expected), (slots, expected)
    assert all(status == "fired" and run for _, status, run in slots), slots
    scheduled = await asyncio.to_thread(
        cluster.query,
        "SELECT id, status FROM run WHERE params->'parameters'->>'label' = 'scheduled'",
    )
    assert sorted(r[0] for r in scheduled) == sorted(s[2] for s in slots), (scheduled, slots)
    await wait_terminal(cluster, [r[0] for r in scheduled], within=30)

    # Every event reached all three endpoints; the audit chain verifies.
    events = await wait_delivered(cluster, receiver, endpoints, within=120)
    delivered = check_deliveries(receiver)
    stored = await asyncio.to_thread(delivery_rows, cluster)
    audit_rows = await wait_sealed(cluster)
    async with httpx.AsyncClient(base_url=cluster.apis[1].url, timeout=30) as reader:
        verified = (await reader.get("/v1/audit-events/verify", headers=headers)).json()
    assert verified["valid"] is True, verified
    assert not ledger.server_errors, ledger.server_errors[:10]
    assert cluster.processes_alive() == {"api0": True, "api1": True, "worker": True}

    total = len(ids)
    print(
        f"\nscale-out: {total} requests {dict(Counter(o.kind for o in ledger.outcomes))} "
        f"accepted in {accepted:.1f} s ({total / accepted:.1f}/s), all terminal after "
        f"{finished:.1f} s ({total / finished:.1f} runs/s)\n"
        f"  answers by status: {dict(sorted(ledger.statuses.items()))}\n"
        f"  runs by status: {dict(Counter(statuses.values()))}\n"
        f"  deployments in progress: {samples} samples, at most {busiest} services busy at "
        f"once, never two of one service\n"
        f"  alerts: {len(alert_statuses)} notifications, {alerts} alerts stored, "
        f"{received} receipts; schedule slots {len(slots)} (expected {len(expected)})\n"
        f"  outbox events {len(events)} to {len(endpoints)} endpoints: {delivered}, "
        f"in the database {stored}\n"
        f"  audit rows {audit_rows} (chain checked {verified['checked']}); "
        f"wall {time.monotonic() - began:.1f} s"
    )
