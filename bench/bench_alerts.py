"""An Alertmanager burst against ``POST /v1/alerts/alertmanager``, beside a bare FastAPI
route in the same run.

Alertmanager sends one notification per alert group, all groups of a flush at once. The
burst here is ``--groups`` notifications (default 50) of ``--alerts-per-group`` alerts
each (default 10: 500 alerts), sent concurrently, each on its own connection, as
Alertmanager's webhook notifier does (one HTTP/1.1 client per receiver, no HTTP/2).
Every burst is sent ``--rounds`` times: round 1 fires (every group opens its incident),
the middle rounds re-send it (as Alertmanager repeats a group and retries), the last
round resolves every group. Two servers run under uvicorn, each in a process of its
own with the options of ``formula-ops api`` (pinned to CPU 0 where there are 2 CPUs):

- **baseline**: a bare FastAPI app whose one POST route parses the same JSON body into
  a dict and answers 200;
- **Formula Ops**: ``app.main.create_app`` on a scratch PostgreSQL database
  (``formula_ops_bench_alerts_<pid>``) with the runbook's thresholds and five
  components, the requests authenticated by a token limited to ``alerts``.

It prints, per round and server, the wall time of the burst, the time per request
(p50 / p95 / max, from sending to the complete answer) and their ratio to the
baseline's, the answers' statuses, then checks what the database holds: one incident
per group (deduplicated), every alert counted once per round. The bound that matters is
Alertmanager's: a notification it does not get an answer for within its notification
timeout (``notify.MinTimeout``, 10 s, or the group_interval when longer) is retried.
Nothing is asserted; the figures go into bench/README.md.

    .venv/bin/python bench/bench_alerts.py [--groups 50] [--alerts-per-group 10] [--rounds 4]

Environment: ``FORMULA_OPS_BENCH_PG_ADMIN_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), ``FORMULA_OPS_BENCH_REDIS_URL``
(default ``redis://127.0.0.1:6379/0``; the keys of a prefix of its own, deleted at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from common import (
    REDIS_URL,
    Connection,
    add_json_option,
    figure,
    free_port,
    percentile,
    pin,
    scratch_postgres,
    started_server,
    uvicorn_options,
    write_json,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

SCRIPT = Path(__file__).resolve()
PATH = "/v1/alerts/alertmanager"
ALERTMANAGER_TIMEOUT = 10.0  # s: Alertmanager's minimum notification timeout
COMPONENTS = (
    ("Frontend", ["bench/frontend"]),
    ("Backend API", ["bench/backend"]),
    ("Database", ["bench/database"]),
    ("Cache", ["bench/cache"]),
    ("File Storage", ["bench/storage"]),
)
ALERT_NAMES = ("HighErrorRate", "HighLatency", "HighCpuUsage", "DiskSpaceLow", "NodeDown")


# -- the servers (each in its own process, started with --serve) ---------------------------


def baseline_app() -> Any:
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.post(PATH)
    async def receive(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        return JSONResponse({"status": "accepted", "alerts": len(body["alerts"])})

    return api


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app.core.logging import configure_logging
    from app.core.settings import Settings
    from app.main import create_app

    pin(args.cpu)
    settings = Settings()
    configure_logging(settings.log_level)
    app = baseline_app() if args.serve == "baseline" else create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, **uvicorn_options())
    uvicorn.Server(config).run()


# -- the notifications ------------------------------------------------------------------------


def notification(group: int, alerts: int, status: str, run: str) -> dict[str, Any]:
    """Group ``group``'s notification: ``alerts`` alerts of one alertname and service."""
    name = ALERT_NAMES[group % len(ALERT_NAMES)]
    component, services = COMPONENTS[group % len(COMPONENTS)]
    service = services[0].partition("/")[2]
    common = {
        "alertname": name,
        "service": service,
        "environment": "bench",
        "severity": "critical" if group % 3 == 0 else "warning",
        "cluster": f"c{group}",
    }
    ends = "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-02T15:30:00Z"
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}", cluster="c{group}", run="{run}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "formula-ops",
        "groupLabels": {"alertname": name, "cluster": f"c{group}"},
        "commonLabels": common,
        "commonAnnotations": {"summary": f"{name} on {component}"},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": status,
                "labels": {**common, "instance": f"10.0.{group}.{i}:9100"},
                "annotations": {
                    "summary": f"{name} on {component}",
                    "description": f"instance 10.0.{group}.{i} of {service}",
                    "value": str(0.5 + (group * 7 + i) % 10),
                },
                "startsAt": "2026-12-02T15:00:00Z",
                "endsAt": ends,
                "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
                "fingerprint": hashlib.sha256(f"{run}/{group}/{i}".encode()).hexdigest()[:16],
            }
            for i in range(alerts)
        ],
    }


def request_bytes(port: int, token: str | None, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Alertmanager/0.25.0\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


async def burst(requests: list[bytes], port: int) -> tuple[float, list[float], Counter[int]]:
    """Every request at once, each on a fresh connection; wall time, latencies, statuses."""

    async def one(data: bytes) -> tuple[float, int]:
        started = time.perf_counter()
        connection = await Connection.open(port)
        try:
            status, _ = await connection.request(data)
        finally:
            connection.close()
        return time.perf_counter() - started, status

    started = time.perf_counter()
    results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
    wall = time.perf_counter() - started
    latencies, statuses = [], Counter[int]()
    for result in results:
        if isinstance(result, BaseException):
            statuses[0] += 1
        else:
            latencies.append(result[0])
            statuses[result[1]] += 1
    return wall, latencies, statuses


# -- setup and checks -------------------------------------------------------------------------


async def prepare(database_url: str, prefix: str, directory: Path) -> str:
    """Five components and a token limited to alerts; returns the token."""
    from app.auth.principal import Principal
    from app.auth.roles import Role
    from app.bootstrap import build_context
    from app.components.models import Component
    from app.core.settings import Settings
    from app.tokens import service as token_service
    from app.tokens.schemas import TokenCreate

    context = build_context(
        Settings(
            database_url=SecretStr(database_url),
            redis_url=SecretStr(REDIS_URL),
            redis_prefix=prefix,
            queue_name=f"{prefix}:queue",
            state_dir=directory,
        )
    )
    try:
        async with context.unit_of_work() as uow:
            for position, (name, services) in enumerate(COMPONENTS):
                uow.session.add(Component(name=name, services=services, position=position))
            body = TokenCreate(
                name="alertmanager", role=Role.VIEWER, scope="alerts", expires_in_days=1
            )
            _, value = await token_service.create(uow, Principal.system("bench"), body)
    finally:
        await context.aclose()
    return value


def census(database_url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        incidents = conn.execute(
            "SELECT count(*), count(DISTINCT dedupe_key), "
            "count(*) FILTER (WHERE status = 'monitoring') FROM incident"
        ).fetchone()
        alerts = conn.execute(
            "SELECT count(*), min(received_count), max(received_count) FROM alert"
        ).fetchone()
        receipts = conn.execute(
            "SELECT count(*) FROM audit_event WHERE action = 'alert.receive'"
        ).fetchone()
        statuses = dict(conn.execute("SELECT name, status FROM component").fetchall())
    assert incidents is not None
    assert alerts is not None
    assert receipts is not None
    return {
        "incidents": incidents[0],
        "distinct_keys": incidents[1],
        "monitoring": incidents[2],
        "alerts": alerts[0],
        "received_min": alerts[1],
        "received_max": alerts[2],
        "audit_records": receipts[0],
        "components": statuses,
    }


def delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--alerts-per-group", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4, help="firing, re-sends…, resolved")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--serve", choices=["baseline", "formula-ops"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    rounds = max(2, args.rounds)
    cpus = os.cpu_count() or 1
    server_cpu = None if args.no_pin or cpus < 2 else 0
    if server_cpu is not None:
        pin(1)
    prefix = f"formula-ops-bench-alerts-{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        directory = Path(tmp)
        try:
            with scratch_postgres(f"formula_ops_bench_alerts_{os.getpid()}", directory) as url:
                token = asyncio.run(prepare(url, prefix, directory))
                env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
                env |= {
                    "FORMULA_OPS_DATABASE_URL": url,
                    "FORMULA_OPS_REDIS_URL": REDIS_URL,
                    "FORMULA_OPS_QUEUE_NAME": f"{prefix}:queue",
                    "FORMULA_OPS_REDIS_PREFIX": prefix,
                    "FORMULA_OPS_STATE_DIR": str(directory),
                    "FORMULA_OPS_LOG_LEVEL": "WARNING",
                }
                table = []
                for kind in ("baseline", "formula-ops"):
                    port = free_port()
                    argv = [sys.executable, str(SCRIPT), "--serve", kind, "--port", str(port)]
                    if server_cpu is not None:
                        argv += ["--cpu", str(server_cpu)]
                    log = directory / f"{kind}.log"
                    with started_server(kind, argv, env, log, port):
                        for n in range(rounds):
                            status = "resolved" if n == rounds - 1 else "firing"
                            bodies = [
                                request_bytes(
                                    port,
                                    token if kind == "formula-ops" else None,
                                    notification(g, args.alerts_per_group, status, run),
                                )
                                for g in range(args.groups)
                            ]
                            wall, latencies, statuses = asyncio.run(burst(bodies, port))
                            table.append((kind, n + 1, status, wall, latencies, statuses))
                report(table, args)
                write_json(args.json, "bench_alerts", figures(table, args))
                print(json.dumps(census(url), indent=2, sort_keys=True))
        finally:
            delete_redis_keys(prefix)


def figures(
    table: list[tuple[str, int, str, float, list[float], Counter[int]]], args: Any
) -> list[dict[str, Any]]:
    """The figures for ``--json``: each round's p95 beside the bare route's, the slowest
    answer against Alertmanager's timeout, the share of answers that were not 2xx."""
    baseline = {n: lat for kind, n, _, _, lat, _ in table if kind == "baseline"}
    found = []
    for kind, n, status, _, latencies, _ in table:
        if kind != "formula-ops":
            continue
        p95 = percentile(latencies, 95) * 1000
        found.append(
            figure(
                f"Alertmanager burst round {n} ({status}, {args.groups} notifications), p95",
                p95,
                "ms",
                baseline=percentile(baseline.get(n, []), 95) * 1000,
                baseline_name="bare route parsing the body",
                goal="< 500 ms",
                met=p95 < 500,
            )
        )
    ours = [row for row in table if row[0] == "formula-ops"]
    worst = max((max(lat, default=0) for *_, lat, _ in ours), default=0)
    base_worst = max((max(lat, default=0) for k, *_, lat, _ in table if k == "baseline"), default=0)
    found.append(
        figure(
            "Alertmanager burst, slowest answer",
            worst * 1000,
            "ms",
            baseline=base_worst * 1000,
            baseline_name="bare route parsing the body",
            goal=f"< {ALERTMANAGER_TIMEOUT * 1000:.0f} ms (Alertmanager's timeout)",
            met=worst < ALERTMANAGER_TIMEOUT,
        )
    )

    def failed(kind: str) -> float:
        answers = Counter[int]()
        for row in table:
            if row[0] == kind:
                answers.update(row[5])
        total = sum(answers.values())
        bad = sum(count for code, count in answers.items() if not 200 <= code < 300)
        return bad / total * 100 if total else math.nan

    rate = failed("formula-ops")
    found.append(
        figure(
            "Alertmanager burst, answers not 2xx",
            rate,
            "%",
            baseline=failed("baseline"),
            baseline_name="bare route parsing the body",
            goal="< 1 %",
            met=rate < 1,
        )
    )
    return found


def report(table: list[tuple[str, int, str, float, list[float], Counter[int]]], args: Any) -> None:
    print(
        f"{args.groups} groups x {args.alerts_per_group} alerts = "
        f"{args.groups * args.alerts_per_group} alerts per burst, {os.cpu_count()} CPUs"
    )
    print(
        f"{'server':<12} {'round':>5} {'status':<9} {'wall ms':>8} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'max ms':>8} {'p50 x':>6} {'answers'}"
    )
    baseline = {n: lat for kind, n, _, _, lat, _ in table if kind == "baseline"}
    for kind, n, status, wall, latencies, statuses in table:
        p50 = percentile(latencies, 50)
        ratio = p50 / percentile(baseline[n], 50) if baseline.get(n) else float("nan")
        answers = ", ".join(f"{code}: {count}" for code, count in sorted(statuses.items()))
        print(
            f"{kind:<12} {n:>5} {status:<9} {ms(wall):>8} {ms(p50):>8} "
            f"{ms(percentile(latencies, 95)):>8} {ms(max(latencies, default=0)):>8} "
            f"{ratio:>6.1f} {answers}"
        )
    worst = max((max(lat, default=0) for k, *_, lat, _ in table if k == "formula-ops"), default=0)
    print(
        f"slowest Formula Ops answer {ms(worst)} ms; Alertmanager's timeout "
        f"{ALERTMANAGER_TIMEOUT:.0f} s: {'met' if worst < ALERTMANAGER_TIMEOUT else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
