"""Throughput and latency of ``POST /v1/deployments`` beside a bare insert + enqueue.

Creates a scratch PostgreSQL database migrated with ``app.core.migrate.upgrade`` and uses the
Redis keys of a prefix of its own, then serves two apps with uvicorn (one worker process
each, in a process of its own, with the uvicorn options and logging of
``formula-ops api``):

- **baseline**: a bare FastAPI app built here, whose one endpoint validates a small JSON
  body, does one INSERT into a small table of the scratch database (an engine of
  ``app.core.db.create_engine``, as the app's) and one ``ArqRedis.enqueue_job`` (a client of
  ``app.core.queue.connect_redis``, on a queue name of its own), and answers 201;
- **Formula Ops**: ``app.main.create_app``, with an environment ``bench`` and a service
  ``api`` (``process`` driver) created through the API. No worker runs, so nothing is
  deployed: the deployments stay queued, which is what is measured (acceptance and
  queueing).

A load generator in a process of its own (raw asyncio HTTP/1.1 keep-alive connections)
then measures the baseline, ``POST /v1/deployments`` with ``dry_run: true`` and the real
``POST /v1/deployments`` (a deployer token, a new ``Idempotency-Key`` per request):

- **saturation**: ``--clients`` connections sending back to back for ``--seconds``
  (after ``--warmup`` seconds not counted): answers per second;
- **latency** at ``--rate`` requests per second, open loop: request *i* is due at
  ``start + i / rate`` whatever happened before it, and its latency counts from then;
  p50 / p95 / p99 by nearest rank.

With 2 CPUs or more the server is pinned to CPU 0 and the load generator to CPU 1
(``--no-pin`` leaves them to the kernel); PostgreSQL and Redis run where the kernel puts
them. Before each Formula Ops phase the deployments queued by earlier phases are marked
done in the database, so every phase starts with an empty queue (a queued deployment
makes the next ones count it for their queue position).

Prints the table (answers per second and their ratio to the baseline's, latency, errors,
CPU per request of the server, PostgreSQL and Redis), then the same figures as the
issue's table with the goals and whether each is met (throughput ratio to the baseline
>= 0.4 for the real POST and >= 0.6 for the dry run, p99 <= 50 ms at 100 requests/s,
<= 5 ms of server CPU per real POST); nothing is asserted. The machinery (load generator,
CPU sampling, scratch database, server start) is ``bench/common.py``. With
``--profile`` the real POST's saturation phase runs once more against a server under
``cProfile`` and the functions that cost most are printed. Servers, the scratch database
and the Redis keys are removed at the end, also on error, Ctrl-C or SIGTERM.

    .venv/bin/python bench/deployment_create.py [--clients 32] [--seconds 10] [--rate 100]
        [--profile]

Environment: ``FORMULA_OPS_BENCH_PG_ADMIN_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) names a database to connect to for
``CREATE DATABASE`` / ``DROP DATABASE``; ``FORMULA_OPS_BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) the Redis to use.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import json
import math
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psycopg
import redis
from common import (
    REDIS_URL,
    REPO_ROOT,
    REQUEST_TIMEOUT,
    add_json_option,
    cpu_seconds,
    figure,
    free_port,
    host_ticks,
    log_tail,
    percentile,
    pin,
    run_load,
    scratch_postgres,
    started_server,
    uvicorn_options,
    write_json,
)
from pydantic import BaseModel, Field, SecretStr

SCRIPT = Path(__file__).resolve()
# The goals of the core reshape: throughput ratio to the baseline at saturation, p99 at
# the fixed rate, server CPU per request.
GOAL_RATIO = {"dry_run": 0.6, "real": 0.4}
GOAL_P99_MS = 50.0
GOAL_SERVER_CPU_MS = {"real": 5.0}
ENVIRONMENT, SERVICE = "bench", "api"
BASELINE_PATH = "/bench/items"
BASELINE_TABLE = "bench_item"
PROFILE_TOP = 25


# -- the servers (each in its own process, started with --serve) ---------------------------


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=200)


def baseline_app(database_url: str, redis_url: str, queue_name: str, job_prefix: str) -> Any:
    """A bare FastAPI app: one endpoint, one INSERT, one arq enqueue, through the drivers
    and factories the app uses."""
    import sqlalchemy as sa
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from app.core.db import create_engine
    from app.core.queue import connect_redis
    from app.core.settings import Settings

    table = sa.Table(
        BASELINE_TABLE,
        sa.MetaData(),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    settings = Settings(database_url=SecretStr(database_url))
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        state["engine"] = create_engine(settings)
        state["redis"] = connect_redis(redis_url, queue_name=queue_name)
        try:
            yield
        finally:
            await state["redis"].aclose(close_connection_pool=True)
            await state["engine"].dispose()

    api = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.post(BASELINE_PATH, status_code=201)
    async def create_item(item: Item) -> JSONResponse:
        item_id = str(uuid.uuid4())
        async with state["engine"].begin() as conn:
            await conn.execute(
                table.insert().values(
                    id=item_id, name=item.name, created_at=dt.datetime.now(dt.UTC)
                )
            )
        await state["redis"].enqueue_job(
            "noop", item_id, _job_id=f"{job_prefix}{item_id}", _queue_name=queue_name
        )
        return JSONResponse({"id": item_id, "name": item.name}, status_code=201)

    return api


def serve(args: argparse.Namespace) -> None:
    """Run one server until SIGTERM; with ``--profile-out``, SIGUSR1 starts cProfile and
    SIGUSR2 stops it and writes the stats there."""
    import uvicorn

    from app.core.logging import configure_logging
    from app.core.settings import Settings
    from app.main import create_app

    pin(args.cpu)
    settings = Settings()
    configure_logging(settings.log_level)
    if args.serve == "baseline":
        assert settings.database_url is not None
        assert settings.redis_url is not None
        app = baseline_app(
            settings.database_url.get_secret_value(),
            settings.redis_url.get_secret_value(),
            f"{settings.redis_prefix}:baseline",  # never the app's queue
            args.job_prefix,
        )
    else:
        app = create_app(settings)
    if args.profile_out:
        install_profiler(Path(args.profile_out))
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, **uvicorn_options())
    uvicorn.Server(config).run()


def install_profiler(out: Path) -> None:
    """SIGUSR1 starts cProfile (CPU time, so others' load does not count) and counters of
    SQL statements, commits and Redis round trips; SIGUSR2 stops them and writes the stats
    to ``out`` and the counters to ``out`` + ``.json``.

    SQLAlchemy's asyncio layer runs the ORM in greenlets; cProfile follows one stack per
    thread, so at each greenlet switch the profiler is stopped and started again: own time
    goes to the function that spent it, but a function's cumulative time ends at the
    first switch below it (a coroutine's does not include the ORM work it awaited)."""
    import greenlet
    from redis.asyncio.connection import AbstractConnection
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    profiler = cProfile.Profile(time.process_time)
    counts: dict[str, int] = {}
    on = False
    send = AbstractConnection.send_packed_command

    def count(name: str) -> None:
        if on:
            counts[name] = counts.get(name, 0) + 1

    def statement(*args: Any) -> None:
        count("SQL " + args[2].lstrip().split(None, 1)[0].upper())

    async def send_counted(self: Any, *args: Any, **kwargs: Any) -> None:
        count("Redis round trips")
        await send(self, *args, **kwargs)

    def switched(_event: str, _args: Any) -> None:
        profiler.disable()
        profiler.enable()

    def start(_signum: int, _frame: Any) -> None:
        nonlocal on
        on = True
        greenlet.settrace(switched)
        profiler.enable()

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal on
        profiler.disable()
        greenlet.settrace(None)
        on = False
        partial = out.with_name(out.name + ".partial")
        profiler.dump_stats(partial)
        out.with_name(out.name + ".json").write_text(json.dumps(counts))
        partial.rename(out)

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "commit", lambda _conn: count("SQL COMMIT"))
    event.listen(Engine, "rollback", lambda _conn: count("SQL ROLLBACK"))
    event.listen(Pool, "checkout", lambda *_: count("pool checkouts"))
    AbstractConnection.send_packed_command = send_counted  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


# -- the load generator (its own process, started with --load) ------------------------------


# -- processes and resources -----------------------------------------------------------------


@contextmanager
def scratch_database(directory: Path) -> Iterator[str]:
    """A migrated scratch database (with the baseline's table); dropped afterwards."""
    with scratch_postgres(
        f"formula_ops_bench_deploy_{os.getpid()}",
        directory,
        [
            f"CREATE TABLE {BASELINE_TABLE} (id varchar(36) PRIMARY KEY,"
            " name varchar(200) NOT NULL, created_at timestamptz NOT NULL)"
        ],
    ) as url:
        yield url


@contextmanager
def redis_keys(prefix: str, database_url: str) -> Iterator[redis.Redis]:
    """The Redis client; on the way out, every key of ``prefix`` and the arq job keys of
    the baseline's jobs and of the runs in the scratch database are deleted."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
        yield client
    finally:
        with psycopg.connect(database_url) as conn:
            run_ids = [row[0] for row in conn.execute("SELECT id FROM run")]
        keys = [f"arq:job:{run_id}" for run_id in run_ids]
        for pattern in (f"{prefix}*", f"arq:job:{prefix}*"):
            keys += [key.decode() for key in client.scan_iter(match=pattern, count=1000)]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        left = sum(1 for _ in client.scan_iter(match=f"*{prefix}*", count=1000))
        print(f"Redis: {len(keys)} keys deleted, {left} of the prefix left", file=sys.stderr)
        client.close()


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    profile_out: Path | None = None


@contextmanager
def server(
    kind: str, env: dict[str, str], directory: Path, cpu: int | None, profile: bool = False
) -> Iterator[Server]:
    port = free_port()
    log = directory / f"server-{kind}-{port}.log"
    argv = [sys.executable, str(SCRIPT), "--serve", kind, "--port", str(port)]
    argv += ["--job-prefix", env["BENCH_JOB_PREFIX"]]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    profile_out = directory / f"profile-{port}.pstats" if profile else None
    if profile_out is not None:
        argv += ["--profile-out", str(profile_out)]
    with started_server(kind, argv, env, log, port) as process:
        yield Server(kind, process, port, log, profile_out)


def server_env(database_url: str, prefix: str, directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    return env | {
        "FORMULA_OPS_DATABASE_URL": database_url,
        "FORMULA_OPS_REDIS_URL": REDIS_URL,
        "FORMULA_OPS_QUEUE_NAME": f"{prefix}:queue",
        "FORMULA_OPS_REDIS_PREFIX": prefix,
        "FORMULA_OPS_STATE_DIR": str(directory),
        # One token sends every request: its per-minute limit must not be what is measured.
        "FORMULA_OPS_TOKEN_REQUESTS_PER_MINUTE": "1000000000",
        "BENCH_JOB_PREFIX": f"{prefix}:job:",
    }


async def issue_tokens(database_url: str, prefix: str, directory: Path) -> tuple[str, str]:
    """An admin token (to create the environment) and a deployer token (to deploy)."""
    from app.auth.principal import Principal
    from app.auth.roles import Role
    from app.bootstrap import build_context
    from app.core.settings import Settings
    from app.tokens import service as token_service
    from app.tokens.schemas import TokenCreate

    settings = Settings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(REDIS_URL),
        redis_prefix=prefix,
        queue_name=f"{prefix}:queue",
        state_dir=directory,
    )
    context = build_context(settings)
    values = []
    try:
        for role in (Role.ADMIN, Role.DEPLOYER):
            body = TokenCreate(name=f"bench {role.value}", role=role, expires_in_days=1)
            async with context.unit_of_work() as uow:
                _, value = await token_service.create(uow, Principal.system("bench"), body)
            values.append(value)
    finally:
        await context.aclose()
    return values[0], values[1]


def create_environment(port: int, admin: str) -> None:
    headers = {"Authorization": f"Bearer {admin}"}
    base = f"http://127.0.0.1:{port}/v1/environments/{ENVIRONMENT}"
    service = {
        "driver": "process",
        "config": {
            "command": ["{python}", "-m", "app.embedded.sample_service"],
            "port": free_port(),
        },
    }
    with httpx.Client(headers=headers, timeout=10) as http:
        for url, body in (
            (base, {"description": "benchmark"}),
            (f"{base}/services/{SERVICE}", service),
        ):
            response = http.put(url, json=body)
            if response.status_code not in (200, 201):
                raise RuntimeError(f"PUT {url}: {response.status_code} {response.text}")


def clear_backlog(database_url: str) -> int:
    """Mark the deployments queued so far done, as if a worker had run them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        cursor = conn.execute("UPDATE deployment_target SET state = 'done' WHERE state <> 'done'")
        return cursor.rowcount


# -- phases ----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    server: Server
    path: str
    body: str
    expect: int
    headers: dict[str, str]
    clears_backlog: bool


@dataclass
class Result:
    """What one load run measured, and what the processes spent during it."""

    load: dict[str, Any]
    server_cpu_ms: float  # per request sent, warm-up included
    postgres_cpu_ms: float
    redis_cpu_ms: float
    host_busy: float  # % of all the host's cores
    backends: dict[str, float]  # mean count per sample, by what they were doing
    backlog_cleared: int = 0


class Sampler:
    """The scratch database's other backends (the servers' connections): their CPU time
    and, sampled while a phase runs, what they are doing."""

    def __init__(self, database_url: str, redis_pid: int | None) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.redis_pid = redis_pid

    def pids(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return [int(row[0]) for row in rows]

    def sample(self, counts: dict[str, float]) -> None:
        rows = self.conn.execute(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        for state, wait_type, wait_event in rows:
            if state == "active":
                what = "active" if wait_type is None else f"waiting: {wait_type}/{wait_event}"
            else:
                what = state or "?"
            counts[what] = counts.get(what, 0) + 1

    def close(self) -> None:
        self.conn.close()


def settle(server: Server) -> None:
    """Until the server is idle (it works through requests their clients gave up on)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        before = cpu_seconds(server.process.pid)
        time.sleep(0.5)
        if cpu_seconds(server.process.pid) - before < 0.025:  # under 5 % of a core
            return
    raise RuntimeError(f"the {server.name} server stays busy:\n{log_tail(server.log)}")


def run_phase(
    target: Target, spec: dict[str, Any], sampler: Sampler, database_url: str, cpu: int | None
) -> Result:
    settle(target.server)
    cleared = clear_backlog(database_url) if target.clears_backlog else 0
    spec = spec | {
        "name": target.name,
        "port": target.server.port,
        "path": target.path,
        "body": target.body,
        "expect": target.expect,
        "headers": target.headers,
        "cpu": cpu,
    }
    backends = {pid: cpu_seconds(pid) for pid in sampler.pids()}
    server_before = cpu_seconds(target.server.process.pid)
    redis_before = cpu_seconds(sampler.redis_pid) if sampler.redis_pid else math.nan
    host_before = host_ticks()
    load = subprocess.Popen(  # noqa: S603 - fixed argv built here
        [sys.executable, str(SCRIPT), "--load", json.dumps(spec)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    counts: dict[str, float] = {}
    samples = 0
    while load.poll() is None:
        time.sleep(0.1)
        sampler.sample(counts)
        samples += 1
    out, _ = load.communicate()
    if load.returncode != 0:
        raise RuntimeError(f"the load generator failed ({load.returncode})")
    busy, total = host_ticks()
    result = json.loads(out)
    sent = max(1, result["sent"])
    postgres = sum(cpu_seconds(pid) - backends.get(pid, 0.0) for pid in sampler.pids())
    redis_cpu = (cpu_seconds(sampler.redis_pid) - redis_before) if sampler.redis_pid else math.nan
    return Result(
        load=result,
        server_cpu_ms=(cpu_seconds(target.server.process.pid) - server_before) * 1000 / sent,
        postgres_cpu_ms=postgres * 1000 / sent,
        redis_cpu_ms=redis_cpu * 1000 / sent,
        host_busy=(busy - host_before[0]) / max(1, total - host_before[1]) * 100,
        backends={what: n / max(1, samples) for what, n in counts.items()},
        backlog_cleared=cleared,
    )


@dataclass
class Row:
    target: Target
    saturated: Result
    paced: Result


def saturation_spec(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "mode": "saturate",
        "clients": args.clients,
        "seconds": args.seconds,
        "warmup": args.warmup,
    }


def measure(
    targets: list[Target],
    args: argparse.Namespace,
    sampler: Sampler,
    database_url: str,
    cpus: tuple[int | None, int | None],
) -> list[Row]:
    saturation = saturation_spec(args)
    paced_spec = {
        "mode": "paced",
        "rate": args.rate,
        "seconds": args.latency_seconds,
        "warmup": 1.0,
    }
    rows = []
    for target in targets:
        print(f"{target.name}: saturation ...", file=sys.stderr)
        saturated = run_phase(target, saturation, sampler, database_url, cpus[1])
        print(f"{target.name}: {args.rate:g} requests/s ...", file=sys.stderr)
        paced_result = run_phase(target, paced_spec, sampler, database_url, cpus[1])
        rows.append(Row(target, saturated, paced_result))
    return rows


# -- report ----------------------------------------------------------------------------------


def ms(value: float) -> str:
    return "failed" if value == math.inf else f"{value:.1f}"


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_report(rows: list[Row], header: str, args: argparse.Namespace) -> None:
    print(header)
    title = (
        f"{'':<10} {'req/s sat.':>10} {'ratio':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'errors':>9} {'server':>7} {'postgres':>8} {'redis':>6} {'host %':>6}"
    )
    print(title)
    print("-" * len(title))
    base = rows[0].saturated.load["per_s"]
    for row in rows:
        sat, lat = row.saturated, row.paced.load
        latencies = lat["latencies_ms"]
        ratio = sat.load["per_s"] / base if base else math.nan
        errors = f"{sat.load['errors']} + {lat['errors']}"
        print(
            f"{row.target.name:<10} {sat.load['per_s']:>10.0f} {ratio:>6.2f}"
            f" {ms(percentile(latencies, 50)):>7} {ms(percentile(latencies, 95)):>7}"
            f" {ms(percentile(latencies, 99)):>7} {errors:>9} {sat.server_cpu_ms:>7.2f}"
            f" {sat.postgres_cpu_ms:>8.2f} {sat.redis_cpu_ms:>6.2f} {sat.host_busy:>6.0f}"
        )
    print(
        f"req/s sat.: expected answers per second, {args.clients} connections back to back for"
        f" {args.seconds:g} s; ratio: to the baseline's;\np50/p95/p99: latency at"
        f" {args.rate:g} requests/s (open loop, {args.latency_seconds:g} s; a failed request,"
        f" {REQUEST_TIMEOUT:g} s timeout or unexpected\nanswer, counts as slower than any answer);"
        " errors: failed requests at saturation + at the fixed rate; server, postgres,\nredis:"
        " CPU ms per request at saturation (postgres: the scratch database's backends, Redis:"
        " the whole redis-server);\nhost %: all cores busy at saturation, whatever ran on them"
    )
    print()
    print_goals(rows, args)
    print()
    for row in rows:
        for label, result in (("saturation", row.saturated), (f"{args.rate:g}/s", row.paced)):
            print(f"{row.target.name}, {label}: {describe(result)}")


def print_goals(rows: list[Row], args: argparse.Namespace) -> None:
    """The issue's table, with the goals and whether each is met."""
    base = rows[0].saturated.load["per_s"]
    names = {
        "baseline": "bare insert + enqueue (baseline)",
        "dry_run": "dry run",
        "real": "real",
    }
    print(
        "| request | req/s | ratio to a bare insert + enqueue | server CPU per request "
        f"| p99 at {args.rate:g} req/s | goals |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        name = row.target.name
        per_s = row.saturated.load["per_s"]
        ratio = per_s / base if base else math.nan
        cpu = row.saturated.server_cpu_ms
        p99 = percentile(row.paced.load["latencies_ms"], 99)
        goals = []
        if name in GOAL_RATIO:
            goals.append(f"ratio >= {GOAL_RATIO[name]}: {met(ratio >= GOAL_RATIO[name])}")
            goals.append(f"p99 <= {GOAL_P99_MS:.0f} ms: {met(p99 <= GOAL_P99_MS)}")
        if name in GOAL_SERVER_CPU_MS:
            limit = GOAL_SERVER_CPU_MS[name]
            goals.append(f"CPU <= {limit:g} ms: {met(cpu <= limit)}")
        print(
            f"| {names.get(name, name)} | {per_s:.0f} | {ratio:.2f} | {cpu:.1f} ms"
            f" | {ms(p99)} ms | {'; '.join(goals) or '-'} |"
        )


def error_rate(row: Row) -> float:
    sent = row.saturated.load["sent"] + row.paced.load["sent"]
    errors = row.saturated.load["errors"] + row.paced.load["errors"]
    return errors / sent * 100 if sent else math.nan


def figures(rows: list[Row], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The figures for ``--json``: each request beside the bare insert + enqueue."""
    base = rows[0]
    base_per_s = base.saturated.load["per_s"]
    base_lat = base.paced.load["latencies_ms"]
    found = []
    for row in rows[1:]:
        name = row.target.name
        label = "POST /v1/deployments" + (" dry_run" if name == "dry_run" else "")
        per_s = row.saturated.load["per_s"]
        ratio = per_s / base_per_s if base_per_s else math.nan
        found.append(
            figure(
                f"{label}, req/s at saturation ({args.clients} connections)",
                per_s,
                "req/s",
                baseline=base_per_s,
                baseline_name="bare insert + enqueue",
                goal=f"ratio >= {GOAL_RATIO[name]}",
                met=ratio >= GOAL_RATIO[name],
            )
        )
        latencies = row.paced.load["latencies_ms"]
        for q in (95, 99):
            value = percentile(latencies, q)
            limit = 500.0 if q == 95 else GOAL_P99_MS
            found.append(
                figure(
                    f"{label}, p{q} at {args.rate:g} req/s",
                    value,
                    "ms",
                    baseline=percentile(base_lat, q),
                    baseline_name="bare insert + enqueue",
                    goal=f"<= {limit:g} ms",
                    met=value <= limit,
                )
            )
        rate = error_rate(row)
        found.append(
            figure(
                f"{label}, failed requests",
                rate,
                "%",
                baseline=error_rate(base),
                baseline_name="bare insert + enqueue",
                goal="< 1 %",
                met=rate < 1.0,
            )
        )
        if name in GOAL_SERVER_CPU_MS:
            cpu = row.saturated.server_cpu_ms
            found.append(
                figure(
                    f"{label}, server CPU per request",
                    cpu,
                    "ms",
                    baseline=base.saturated.server_cpu_ms,
                    baseline_name="bare insert + enqueue",
                    goal=f"<= {GOAL_SERVER_CPU_MS[name]:g} ms",
                    met=cpu <= GOAL_SERVER_CPU_MS[name],
                )
            )
    return found


def describe(result: Result) -> str:
    load = result.load
    parts = [f"load generator {load['cpu_percent']:.0f} % of its CPU"]
    if "per_second" in load:
        seconds = load["per_second"]
        parts.append(f"first / last second {seconds[0]} / {seconds[-1]} answers")
    if "late_ms_p99" in load:
        parts.append(f"sends late by {load['late_ms_p99']:.1f} ms at p99")
    busy = ", ".join(
        f"{n:.1f} {what}" for what, n in sorted(result.backends.items(), key=lambda x: -x[1])
    )
    parts.append(f"database backends (mean): {busy or 'none'}")
    if result.backlog_cleared:
        parts.append(f"{result.backlog_cleared} queued targets marked done before")
    if load["samples"]:
        parts.append("errors like: " + "; ".join(load["samples"]))
    return "; ".join(parts)


def print_profile(path: Path, result: Result, cpu_ms: float) -> None:
    """The profile as shares of the server's CPU time (and, from the unprofiled run's CPU
    per request, about how many ms per request): the top functions by cumulative time,
    own time by package, and the app's own functions by cumulative time."""
    stats: Any = pstats.Stats(str(path))
    entries: dict[tuple[str, int, str], Any] = stats.stats
    total = sum(entry[2] for entry in entries.values()) or 1.0
    load = result.load
    print()
    print(
        f"profile: the real POST at saturation, server under cProfile (CPU time); {load['sent']}"
        f" requests, {load['per_s']:.0f}/s with the profiler on. %: of the server's CPU time;"
        f"\nms/req: that share of the {cpu_ms:.1f} ms of CPU per request measured without it"
    )

    def line(share: float, label: str) -> str:
        return f"{share * 100:>6.1f} {share * cpu_ms:>7.2f}  {label}"

    counts = json.loads(path.with_name(path.name + ".json").read_text())
    sent = max(1, load["sent"])
    print(
        "per request: "
        + ", ".join(f"{n / sent:.1f} {name}" for name, n in sorted(counts.items()))
        + " (a pool checkout pings the server first: pool_pre_ping)"
    )
    for title, index, top in (("cumulative", 3, PROFILE_TOP), ("own", 2, 15)):
        print(f"\ntop {top} by {title} time:\n{'%':>6} {'ms/req':>7}  function")
        ranked = sorted(entries.items(), key=lambda item: -item[1][index])[:top]
        for key, entry in ranked:
            print(line(entry[index] / total, function_name(key)))

    packages: dict[str, float] = {}
    for key, (_, _, own, _, callers) in entries.items():
        if key[0] != "~":
            packages[package(key[0])] = packages.get(package(key[0]), 0.0) + own
            continue
        # C functions (builtins, methods): their time goes to the package calling them.
        for caller, (_, _, spent, _) in callers.items():
            packages[package(caller[0])] = packages.get(package(caller[0]), 0.0) + spent
        packages["C, no Python caller"] = packages.get("C, no Python caller", 0.0) + max(
            0.0, own - sum(c[2] for c in callers.values())
        )
    print("\nown time by package (C functions counted with their caller):")
    print(f"{'%':>6} {'ms/req':>7}")
    for name, own in sorted(packages.items(), key=lambda item: -item[1]):
        if own / total >= 0.005:
            print(line(own / total, name))

    mine = [(k, e) for k, e in entries.items() if k[0].startswith(f"{REPO_ROOT}/app/")]
    print(f"\napp functions by cumulative time:\n{'%':>6} {'ms/req':>7}  function")
    for key, entry in sorted(mine, key=lambda item: -item[1][3])[:15]:
        print(line(entry[3] / total, function_name(key)))


def function_name(key: tuple[str, int, str]) -> str:
    filename, number, name = key
    return name if filename == "~" else f"{short(filename)}:{number}({name})"


def package(filename: str) -> str:
    if filename == "~":
        return "C, no Python caller"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith(f"{REPO_ROOT}/"):
        return filename[len(str(REPO_ROOT)) + 1 :].split("/", 1)[0]
    if "/asyncio/" in filename:
        return "asyncio"
    return "stdlib" if filename.startswith(("/", "<frozen")) else filename


def short(filename: str) -> str:
    for marker in ("site-packages/", f"{REPO_ROOT}/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def profile_run(
    env: dict[str, str],
    directory: Path,
    args: argparse.Namespace,
    sampler: Sampler,
    database_url: str,
    tokens: tuple[str, str],
    cpus: tuple[int | None, int | None],
    cpu_ms: float,
) -> None:
    with server("formula-ops", env, directory, cpus[0], profile=True) as real:
        target = real_targets(real, tokens[1])[1]
        spec = saturation_spec(args) | {"warmup": 0.0}
        print("real POST under cProfile: warm-up ...", file=sys.stderr)
        run_phase(target, spec | {"seconds": args.warmup}, sampler, database_url, cpus[1])
        print("real POST under cProfile: saturation ...", file=sys.stderr)
        real.process.send_signal(signal.SIGUSR1)
        result = run_phase(target, spec, sampler, database_url, cpus[1])
        real.process.send_signal(signal.SIGUSR2)
        assert real.profile_out is not None
        deadline = time.monotonic() + 30
        while not real.profile_out.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no profile written:\n{log_tail(real.log)}")
            time.sleep(0.1)
        if args.profile_save:
            shutil.copyfile(real.profile_out, args.profile_save)
        print_profile(real.profile_out, result, cpu_ms)


def real_targets(real: Server, deployer: str) -> list[Target]:
    headers = {"Authorization": f"Bearer {deployer}"}
    body = {"environment": ENVIRONMENT, "service": SERVICE, "version": "1.0.{n}"}
    dry = json.dumps(body | {"dry_run": True}, separators=(",", ":"))
    path = "/v1/deployments"
    return [
        Target("dry_run", real, path, dry, 200, headers, clears_backlog=True),
        Target("real", real, path, json.dumps(body, separators=(",", ":")), 202, headers, True),
    ]


# -- main ------------------------------------------------------------------------------------


def redis_pid(client: redis.Redis) -> int | None:
    """The Redis server's pid, when it runs on this host (for its CPU time)."""
    if not REDIS_URL.startswith(("redis://127.0.0.1", "redis://localhost")):
        return None
    pid = int(client.info("server")["process_id"])
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def postgres_version(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def _terminate(signum: int, _frame: Any) -> NoReturn:
    """SIGINT / SIGTERM: unwind through every ``finally`` (a second signal is ignored,
    so it cannot cut the clean-up short)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="connections at saturation")
    parser.add_argument("--seconds", type=float, default=10.0, help="saturation, measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="saturation, not counted")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s, latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--no-pin", action="store_true", help="leave CPUs to the kernel")
    parser.add_argument("--profile", action="store_true", help="profile the real POST too")
    parser.add_argument("--profile-save", metavar="FILE", help="keep the pstats file there")
    parser.add_argument("--serve", choices=("baseline", "formula-ops"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--job-prefix", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.load:
        run_load(json.loads(args.load))
        return
    if args.clients < 1 or min(args.seconds, args.rate, args.latency_seconds) <= 0:
        parser.error("--clients must be at least 1, --seconds, --rate and --latency-seconds > 0")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _terminate)
    cpus: tuple[int | None, int | None] = (None, None)
    available = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(available) >= 2:
        cpus = (available[0], available[1])
    prefix = f"bench-deploy-{os.getpid()}"
    with (
        tempfile.TemporaryDirectory(prefix="formula-ops-bench-") as tmp,
        scratch_database(Path(tmp)) as database_url,
        redis_keys(prefix, database_url) as client,
    ):
        directory = Path(tmp)
        env = server_env(database_url, prefix, directory)
        sampler = Sampler(database_url, redis_pid(client))
        try:
            tokens = asyncio.run(issue_tokens(database_url, prefix, directory))
            with (
                server("baseline", env, directory, cpus[0]) as bare,
                server("formula-ops", env, directory, cpus[0]) as real,
            ):
                create_environment(real.port, tokens[0])
                targets = [
                    Target(
                        "baseline",
                        bare,
                        BASELINE_PATH,
                        '{"name":"item-{n}"}',
                        201,
                        {"Authorization": f"Bearer {tokens[1]}"},
                        clears_backlog=False,
                    ),
                    *real_targets(real, tokens[1]),
                ]
                rows = measure(targets, args, sampler, database_url, cpus)
            pinning = (
                f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}"
                if cpus[0] is not None
                else "no CPU pinning"
            )
            header = (
                f"{postgres_version(database_url)}, {os.cpu_count()} CPUs ({pinning}); "
                f"uvicorn, one worker process per server; percentiles by nearest rank"
            )
            print_report(rows, header, args)
            write_json(args.json, "deployment_create", figures(rows, args), header=header)
            if args.profile:
                cpu_ms = rows[-1].saturated.server_cpu_ms
                profile_run(env, directory, args, sampler, database_url, tokens, cpus, cpu_ms)
        finally:
            sampler.close()


if __name__ == "__main__":
    main()
