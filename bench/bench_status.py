"""``GET /api/v2/summary.json`` (the page the public reloads during an incident) against a
bare FastAPI ``GET /health`` in the same run, both served by uvicorn on 127.0.0.1 with
the options of ``formula-ops api``.

The application runs as ``formula-ops api`` on a scratch PostgreSQL database (or a SQLite
file) holding the runbook's five components, an open P1 incident with three public
updates and a maintenance window in progress, so the summary is a realistic 5 kB. The
baseline is a FastAPI application with one route, ``/health`` answering a small JSON
object, and nothing else (no middleware, no database). Both servers are pinned to CPU 0
and the load generator to CPU 1; the phases alternate (baseline, summary, … then the
summary revalidated with ``If-None-Match`` and the application's own ``/health``) so
drift on a shared machine hits both sides.

    .venv/bin/python bench/bench_status.py                 # PostgreSQL, 4 x 5 s per side
    .venv/bin/python bench/bench_status.py --backend sqlite --seconds 5 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    REDIS_URL,
    Connection,
    add_json_option,
    figure,
    free_port,
    log_tail,
    percentile,
    pin,
    scratch_postgres,
    started_server,
    write_json,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


# -- the baseline server -------------------------------------------------------------------


def serve_baseline(port: int) -> None:
    """A bare FastAPI application: ``GET /health`` and nothing else."""
    import uvicorn
    from fastapi import FastAPI

    from app.cli.serving import UVICORN_OPTIONS

    bare = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @bare.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": "0.1.0"}

    uvicorn.run(bare, host="127.0.0.1", port=port, **UVICORN_OPTIONS)


# -- data ----------------------------------------------------------------------------------


async def seed(database_url: str, directory: Path) -> None:
    """The runbook's components, a P1 on the Backend API, a maintenance on the Database,
    written as the domains write them (claims and a status revision bump)."""
    from pydantic import SecretStr

    from app.bootstrap import build_context
    from app.components import claims, revision
    from app.components.models import Component
    from app.core.db import insert_rows, utcnow
    from app.core.settings import Settings
    from app.incidents.models import Incident, IncidentComponent, IncidentUpdateRecord
    from app.maintenances.models import Maintenance, MaintenanceComponent, MaintenanceUpdate

    settings = Settings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(REDIS_URL),
        state_dir=directory,
        redis_prefix=f"bench-status-{os.getpid()}",
    )
    context = build_context(settings)
    now = utcnow()
    try:
        async with context.unit_of_work() as uow:
            rows = [
                Component(name=name, group_name=group, position=position, created_at=now)
                for name, group, position in (
                    ("Frontend", "Application", 1),
                    ("Backend API", "Application", 2),
                    ("Database", "Data", 1),
                    ("Cache", "Data", 2),
                    ("File Storage", "Data", 3),
                )
            ]
            await insert_rows(uow.session, rows)
            ids = {row.name: row.id for row in rows}
            incident = Incident(
                title="Elevated error rate on the Backend API",
                severity="P1",
                impact="major",
                created_by="bench",
                created_at=now,
            )
            await insert_rows(uow.session, [incident])
            await insert_rows(
                uow.session,
                [
                    IncidentComponent(
                        incident_id=incident.id,
                        component_id=ids["Backend API"],
                        status="partial_outage",
                    )
                ],
            )
            await insert_rows(
                uow.session,
                [
                    IncidentUpdateRecord(
                        incident_id=incident.id,
                        status=status,
                        body=f"{status.capitalize()}: " + "the API answers 5xx to some calls. " * 4,
                        created_by="bench",
                        created_at=now + dt.timedelta(minutes=n),
                    )
                    for n, status in enumerate(("investigating", "identified", "monitoring"))
                ],
            )
            await claims.set_claims(
                uow.session, claims.INCIDENT, incident.id, {ids["Backend API"]: "partial_outage"}
            )
            window = Maintenance(
                title="Database upgrade",
                status="in_progress",
                scheduled_for=now,
                scheduled_until=now + dt.timedelta(hours=1),
                started_at=now,
                created_by="bench",
            )
            await insert_rows(uow.session, [window])
            await insert_rows(
                uow.session,
                [MaintenanceComponent(maintenance_id=window.id, component_id=ids["Database"])],
            )
            await insert_rows(
                uow.session,
                [
                    MaintenanceUpdate(
                        maintenance_id=window.id,
                        status="in_progress",
                        body="The upgrade is under way.",
                        created_by="bench",
                    )
                ],
            )
            await claims.set_claims(
                uow.session, claims.MAINTENANCE, window.id, {ids["Database"]: "under_maintenance"}
            )
            await revision.bump(uow.session)
    finally:
        await context.aclose()


# -- load ----------------------------------------------------------------------------------


async def exchange(conn: Connection, request: bytes) -> tuple[int, bytes]:
    """One request; a 304 has no body (nor Content-Length)."""
    conn.writer.write(request)
    head = await conn.reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    if status == 304:
        return status, b""
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert length is not None, head
    return status, await conn.reader.readexactly(int(length.group(1)))


async def get_phase(
    port: int, path: str, clients: int, seconds: float, warmup: float, headers: dict[str, str]
) -> dict[str, Any]:
    """``clients`` keep-alive connections sending ``GET path`` back to back."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}\r\n".encode()
    expect = 304 if "If-None-Match" in headers else 200
    latencies: list[float] = []
    errors: list[str] = []
    size = 0
    start = time.monotonic()
    measure_from, end = start + warmup, start + warmup + seconds

    async def client() -> None:
        nonlocal size
        conn = await Connection.open(port)
        try:
            while (now := time.monotonic()) < end:
                status, body = await exchange(conn, request)
                done = time.monotonic()
                if status != expect:
                    errors.append(f"HTTP {status} {body[:200]!r}")
                elif now >= measure_from:
                    latencies.append(done - now)
                    size = len(body)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return {
        "per_s": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": len(errors),
        "samples": errors[:3],
        "bytes": size,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "baseline-server":
        serve_baseline(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured phase")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    add_json_option(parser)
    args = parser.parse_args()

    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-status-")))
        if args.backend == "postgres":
            url = stack.enter_context(
                scratch_postgres(f"formula_ops_bench_status_{os.getpid()}", directory)
            )
        else:
            from pydantic import SecretStr

            from app.core import migrate
            from app.core.settings import Settings

            url = f"sqlite+aiosqlite:///{directory / 'status.db'}"
            migrate.upgrade(Settings(database_url=SecretStr(url), state_dir=directory))
        asyncio.run(seed(url, directory))

        env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
        app_port, base_port = free_port(), free_port()
        app_env = env | {
            "FORMULA_OPS_DATABASE_URL": url,
            "FORMULA_OPS_REDIS_URL": REDIS_URL,
            "FORMULA_OPS_REDIS_PREFIX": f"bench-status-{os.getpid()}",
            "FORMULA_OPS_STATE_DIR": str(directory),
            "FORMULA_OPS_SECRET_KEY": "bench-status-secret-key-0123456789abcdef",
            "FORMULA_OPS_ENVIRONMENT": "production",
        }
        formula_ops = str(Path(sys.executable).parent / "formula-ops")
        application = stack.enter_context(
            started_server(
                "formula-ops api",
                [formula_ops, "api", "--host", "127.0.0.1", "--port", str(app_port)],
                app_env,
                directory / "api.log",
                app_port,
            )
        )
        baseline = stack.enter_context(
            started_server(
                "baseline",
                [sys.executable, str(Path(__file__).resolve()), "baseline-server", str(base_port)],
                env,
                directory / "baseline.log",
                base_port,
            )
        )
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            for process in (application, baseline):
                os.sched_setaffinity(process.pid, {cpus[0]})
            pin(cpus[1])

        def phase(port: int, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
            return asyncio.run(
                get_phase(port, path, args.clients, args.seconds, args.warmup, headers or {})
            )

        import httpx

        etag = httpx.get(f"http://127.0.0.1:{app_port}/api/v2/summary.json").headers["etag"]
        results: dict[str, list[dict[str, Any]]] = {
            "baseline": [],
            "summary": [],
            "revalidated": [],
            "app_health": [],
        }
        for _ in range(args.rounds):
            results["baseline"].append(phase(base_port, "/health"))
            results["summary"].append(phase(app_port, "/api/v2/summary.json"))
        results["app_health"].append(phase(app_port, "/health"))
        results["revalidated"].append(
            phase(app_port, "/api/v2/summary.json", {"If-None-Match": etag})
        )
        if any(r["errors"] for rs in results.values() for r in rs):
            print(json.dumps(results, indent=2), file=sys.stderr)
            print(log_tail(directory / "api.log"), file=sys.stderr)
            raise SystemExit("errors during the run")

    base = sum(r["per_s"] for r in results["baseline"]) / args.rounds
    summary = sum(r["per_s"] for r in results["summary"]) / args.rounds
    print(
        f"{args.backend}, {args.clients} clients, {args.rounds} x {args.seconds:g} s per side "
        f"(CPU 0: servers, CPU 1: load)"
    )
    print(f"{'phase':<34}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'bytes':>8}")
    for name, label in (
        ("baseline", "bare FastAPI GET /health"),
        ("summary", "GET /api/v2/summary.json"),
        ("revalidated", "summary.json, If-None-Match (304)"),
        ("app_health", "formula-ops api GET /health"),
    ):
        for r in results[name]:
            print(
                f"{label:<34}{r['per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                f"{r['bytes']:>8}"
            )
    pairs = [
        s["per_s"] / b["per_s"]
        for b, s in zip(results["baseline"], results["summary"], strict=True)
    ]
    print(
        "ratio per round (summary / the baseline just before): "
        + ", ".join(f"{r:.2f}" for r in pairs)
    )
    print(f"ratio summary.json / bare /health: {summary / base:.2f} (goal >= 0.7)")

    def mean(name: str, key: str) -> float:
        return sum(r[key] for r in results[name]) / len(results[name])

    p99 = mean("summary", "p99_ms")
    write_json(
        args.json,
        "bench_status",
        [
            figure(
                f"GET /api/v2/summary.json req/s ({args.backend}, {args.clients} clients)",
                summary,
                "req/s",
                baseline=base,
                baseline_name="bare FastAPI GET /health",
                goal="ratio >= 0.7",
                met=summary / base >= 0.7,
            ),
            figure(
                "GET /api/v2/summary.json p99 at saturation",
                p99,
                "ms",
                baseline=mean("baseline", "p99_ms"),
                baseline_name="bare FastAPI GET /health",
                goal="< 500 ms",
                met=p99 < 500,
            ),
        ],
    )


if __name__ == "__main__":
    main()
