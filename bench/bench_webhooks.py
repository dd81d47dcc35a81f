"""Webhook delivery throughput beside raw HTTP clients, measured in the same run.

A receiver (aiohttp web, answering ``200 ok``) runs in a process of its own on 127.0.0.1,
so it does not share the bench's event loop; its CPU time is reported per phase. Then:

- **baseline A**: raw aiohttp POSTs (one ``ClientSession``, ``--concurrency`` tasks) of
  a body as large as a rendered event, for ``--seconds`` after a warm-up: requests/s;
- **baseline B**: the same through one shared ``httpx.AsyncClient`` (documents why the
  sender uses aiohttp, encode/httpx#3215);
- **Formula Ops**: ``--events`` events written to the outbox of a scratch database (in
  transactions of ``--chunk``), one enabled endpoint pointing at the receiver, delivered
  by a real worker until every delivery is ``succeeded``: deliveries/s from the first
  event written to the moment the bench saw the last one recorded (polled every 20 ms),
  each signed and recorded with its attempt. ``--modes``: ``subprocess`` (a
  ``formula-ops worker`` process, as in production; ``--processes N`` for several)
  and/or ``inprocess`` (an arq worker in the bench's own event loop; ``--profile FILE``
  writes a cProfile of that phase, in CPU time). ``--batch-sizes``: one phase per value
  of ``FORMULA_OPS_WEBHOOKS__BATCH_SIZE``.

It prints each phase's rate, the ratio of the system to baseline A and whether the goal
(≥ 25 %) is met, and CPU per request or delivery: the worker process (or the bench
process in-process, which then includes writing the events), the PostgreSQL backends of
the scratch database, the receiver, and how busy the host was. Nothing is asserted.

The database is a scratch PostgreSQL database ``formula_ops_bench_webhooks_<pid>``
(``FORMULA_OPS_BENCH_PG_ADMIN_URL``) or, with ``--backend sqlite``, a file in a temporary
directory; Redis is a private ``redis-server`` on a free port. All are removed at the
end, also on error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import httpx
from common import (
    add_json_option,
    cpu_seconds,
    figure,
    free_port,
    host_ticks,
    log_tail,
    scratch_postgres,
    write_json,
)
from pydantic import SecretStr
from run_latency import (
    formula_ops_command,
    postgres_backends,
    process_tree,
    redis_server,
    running,
    wait_ready,
)
from sqlalchemy import func, select, update

from app.auth.principal import Principal
from app.auth.roles import Role
from app.bootstrap import build_context
from app.core import migrate
from app.core.context import AppContext
from app.core.db import insert_rows, utcnow
from app.core.ids import new_id
from app.core.settings import Settings, WebhookSettings
from app.outbox.models import OutboxEvent
from app.webhooks import payloads
from app.webhooks import service as webhook_service
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.webhooks.schemas import WebhookCreate

GOAL = 0.25
SECRET_KEY = "bench-webhooks-" + "k" * 40  # a scratch database's server secret
EVENT_TYPE = "webhook.test"
POLL = 0.02


# -- the receiver (its own process) ---------------------------------------------------------


def run_receiver(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@contextmanager
def receiver(directory: Path) -> Iterator[tuple[int, int]]:
    """The receiver process on a free port; yields (port, pid)."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--receiver", str(port)]
    log = directory / "receiver.log"
    with running(argv, log) as process:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the receiver did not start:\n{log_tail(log)}") from None
                time.sleep(0.05)
        yield port, process.pid


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    count: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # seconds per party
    host_busy: float = 0.0  # % of all cores
    notes: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def cpu_ms(self, party: str) -> float | None:
        used = self.cpu.get(party)
        return None if used is None or not self.count else used / self.count * 1000


class Meter:
    """CPU seconds of named process groups (and this process) and host busyness."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def start(self) -> None:
        self._cpu = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}
        self._bench = time.process_time()
        self._host = host_ticks()

    def stop(self, phase: Phase) -> None:
        busy, total = host_ticks()
        phase.host_busy = (busy - self._host[0]) / max(1, total - self._host[1]) * 100
        phase.cpu["bench"] = time.process_time() - self._bench
        for name, pids in self.groups.items():
            phase.cpu[name] = sum(cpu_seconds(p) for p in pids) - self._cpu[name]


async def post_loop(
    send: Any, concurrency: int, seconds: float, warmup: float
) -> tuple[int, int, list[str]]:
    """``concurrency`` tasks calling ``send()`` back to back; (ok, errors, samples)
    counted after the warm-up."""
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    end = measure_from + seconds
    ok = errors = 0
    samples: list[str] = []

    async def client() -> None:
        nonlocal ok, errors
        while loop.time() < end:
            try:
                status = await send()
                error = None if status == 200 else f"HTTP {status}"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            if loop.time() < measure_from or loop.time() >= end:
                continue
            if error is None:
                ok += 1
            else:
                errors += 1
                if len(samples) < 3:
                    samples.append(error)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return ok, errors, samples


async def client_phase(
    name: str, url: str, body: bytes, args: argparse.Namespace, meter: Meter
) -> Phase:
    headers = {"Content-Type": "application/json"}
    phase = Phase(name)
    if name.startswith("aiohttp"):
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def send() -> int:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return response.status

            meter.start()
            ok, errors, samples = await post_loop(send, args.concurrency, args.seconds, 1.0)
    else:
        limits = httpx.Limits(max_connections=args.concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def send() -> int:
                return (await client.post(url, content=body, headers=headers)).status_code

            meter.start()
            ok, errors, samples = await post_loop(send, args.concurrency, args.seconds, 1.0)
    meter.stop(phase)
    phase.count, phase.seconds = ok, args.seconds
    # The CPU of the warm-up second is in the totals: spread over the measured seconds.
    scale = args.seconds / (args.seconds + 1.0)
    phase.cpu = {k: v * scale for k, v in phase.cpu.items()}
    if errors:
        phase.notes.append(f"{errors} errors, e.g. {samples}")
    return phase


# -- the system -----------------------------------------------------------------------------


def event_data(n: int) -> dict[str, Any]:
    return {"n": n, "run_id": new_id(), "status": "succeeded", "note": "x" * 200}


def sample_body() -> bytes:
    event = OutboxEvent(id=new_id(), type=EVENT_TYPE, data=event_data(0), created_at=utcnow())
    return payloads.render(WebhookEndpoint(format="standard"), event)


def bench_settings(
    database_url: str, redis_port: int, name: str, directory: Path, batch_size: int | None
) -> Settings:
    webhooks = WebhookSettings(allowed_networks=["127.0.0.1/32"], allow_http=True)
    if batch_size is not None:
        webhooks.batch_size = batch_size
    return Settings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(f"redis://127.0.0.1:{redis_port}/0"),
        queue_name=f"bench:webhooks:{name}",
        redis_prefix=f"bench-webhooks-{name}",
        secret_key=SecretStr(SECRET_KEY),
        state_dir=directory,
        webhooks=webhooks,
    )


def worker_env(settings: Settings, directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    assert settings.database_url is not None
    assert settings.redis_url is not None
    return env | {
        "FORMULA_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
        "FORMULA_OPS_REDIS_URL": settings.redis_url.get_secret_value(),
        "FORMULA_OPS_QUEUE_NAME": settings.queue_name,
        "FORMULA_OPS_REDIS_PREFIX": settings.redis_prefix,
        "FORMULA_OPS_SECRET_KEY": SECRET_KEY,
        "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
        "FORMULA_OPS_STATE_DIR": str(directory),
        "FORMULA_OPS_WEBHOOKS__ALLOWED_NETWORKS": "127.0.0.1/32",
        "FORMULA_OPS_WEBHOOKS__ALLOW_HTTP": "true",
        "FORMULA_OPS_WEBHOOKS__BATCH_SIZE": str(settings.webhooks.batch_size),
    }


async def new_endpoint(context: AppContext, url: str) -> str:
    """The only enabled endpoint: earlier phases' endpoints are disabled."""
    async with context.unit_of_work() as uow:
        await uow.session.execute(update(WebhookEndpoint).values(enabled=False))
        endpoint, _ = await webhook_service.create(
            uow,
            context,
            Principal.system("bench", Role.OPERATOR),
            WebhookCreate(url=url, event_types=[EVENT_TYPE]),
        )
        return endpoint.id


async def write_events(context: AppContext, count: int, chunk: int) -> float:
    """``count`` events in transactions of ``chunk``; seconds it took."""
    started = time.monotonic()
    for start in range(0, count, chunk):
        async with context.unit_of_work() as uow:
            now = utcnow()
            events = [
                OutboxEvent(id=new_id(), type=EVENT_TYPE, data=event_data(n), created_at=now)
                for n in range(start, min(count, start + chunk))
            ]
            await insert_rows(uow.session, events)
    return time.monotonic() - started


async def tally(context: AppContext, endpoint_id: str) -> dict[str, int]:
    async with context.sessionmaker() as session:
        rows = await session.execute(
            select(WebhookDelivery.status, func.count())
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .group_by(WebhookDelivery.status)
        )
        found = {status: int(n) for status, n in rows.all()}
        found["attempts"] = int(
            await session.scalar(
                select(func.count())
                .select_from(WebhookAttempt)
                .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
                .where(WebhookDelivery.endpoint_id == endpoint_id)
            )
            or 0
        )
    return found


async def deliver_all(
    context: AppContext,
    endpoint_id: str,
    args: argparse.Namespace,
    phase: Phase,
    profile: cProfile.Profile | None = None,
) -> None:
    started, started_at = time.monotonic(), utcnow()
    # Written by a task: the bench polls meanwhile, so the timeline starts with the writes.
    writer = asyncio.create_task(write_events(context, args.events, args.chunk))
    if profile is not None:  # CPU time, not wall time; the bench's writes and polls too
        profile.enable()
    loop_deadline = started + args.timeout
    seen: list[tuple[float, int]] = []  # (seconds since the first event, recorded so far)
    while True:
        async with context.sessionmaker() as session:
            done = await session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(
                    WebhookDelivery.endpoint_id == endpoint_id,
                    WebhookDelivery.status != "pending",
                )
            )
        seen.append((time.monotonic() - started, int(done or 0)))
        if done is not None and done >= args.events:
            break
        if time.monotonic() > loop_deadline:
            phase.notes.append(f"timed out: {done} of {args.events} deliveries recorded")
            break
        await asyncio.sleep(POLL)
    phase.seconds = time.monotonic() - started
    writing = await writer
    async with context.sessionmaker() as session:
        first_attempt = await session.scalar(
            select(func.min(WebhookAttempt.started_at))
            .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
        )
    if first_attempt is not None:
        phase.notes.append(
            f"first attempt {(first_attempt - started_at).total_seconds():.2f} s after the "
            "first event's transaction began"
        )
    tenth = next((t for t, n in seen if n >= args.events // 10), None)
    ninth = next((t for t, n in seen if n >= args.events * 9 // 10), None)
    if tenth is not None and ninth is not None and ninth > tenth:
        steady = (args.events * 9 // 10 - args.events // 10) / (ninth - tenth)
        phase.notes.append(f"{steady:,.0f}/s from 10 % to 90 % of the deliveries")
    counts = await tally(context, endpoint_id)
    phase.count = counts.get("succeeded", 0)
    phase.notes.append(
        f"events written in {writing:.2f} s; deliveries {dict(sorted(counts.items()))}"
    )


async def system_phase(
    mode: str,
    batch_size: int,
    database_url: str,
    redis_port: int,
    url: str,
    args: argparse.Namespace,
    directory: Path,
    groups: dict[str, list[int]],
) -> Phase:
    name = f"{mode}-{new_id()[-8:]}"
    settings = bench_settings(database_url, redis_port, name, directory, batch_size)
    context = build_context(settings)
    processes = args.processes if mode == "subprocess" else 1
    label = f"{mode} worker" if processes == 1 else f"{mode} worker x {processes} processes"
    phase = Phase(f"Formula Ops, {label}, batch {batch_size}")
    try:
        endpoint_id = await new_endpoint(context, url)
        if mode == "subprocess":
            log = directory / f"worker-{name}.log"
            argv = formula_ops_command(processes)
            with running(argv, log, worker_env(settings, directory)) as proc:
                key = f"{settings.queue_name}:health-check"
                await wait_ready(context.redis, key, proc, log, processes)
                workers = {"worker": process_tree(proc.pid)}
                meter = Meter(groups | workers | database_group(database_url))
                meter.start()
                await deliver_all(context, endpoint_id, args, phase)
                meter.stop(phase)
                if proc.poll() is not None:
                    phase.notes.append(f"the worker exited:\n{log_tail(log)}")
        else:
            from workers.main import create_worker, stop_worker

            worker = create_worker(settings, handle_signals=False)
            task = asyncio.create_task(worker.main())
            await wait_ready_inprocess(context, settings)
            meter = Meter(groups | database_group(database_url))
            profile = cProfile.Profile(time.process_time) if args.profile else None
            meter.start()
            await deliver_all(context, endpoint_id, args, phase, profile)
            if profile is not None:
                profile.disable()
                profile.dump_stats(args.profile)
            meter.stop(phase)
            await stop_worker(worker, task)
    finally:
        await context.aclose()
    return phase


def database_group(database_url: str) -> dict[str, list[int]]:
    """The PostgreSQL backends serving the scratch database (none on SQLite)."""
    if not database_url.startswith("postgresql"):
        return {}
    return {"postgres": postgres_backends(database_url)}


async def wait_ready_inprocess(context: AppContext, settings: Settings) -> None:
    deadline = time.monotonic() + 60
    while not await context.redis.exists(f"{settings.queue_name}:health-check"):
        if time.monotonic() > deadline:
            raise RuntimeError("the in-process worker did not start")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)


# -- report ---------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(phases: list[Phase], header: str) -> None:
    print(header)
    base = next((p for p in phases if p.name.startswith("aiohttp")), None)
    print()
    print(
        "| phase | done | s | per s | ratio to A | CPU ms each: worker or client "
        "| PostgreSQL | receiver | host busy % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for phase in phases:
        ratio = phase.per_s / base.per_s if base and base.per_s else float("nan")
        mine = phase.cpu_ms("worker") if "worker" in phase.cpu else phase.cpu_ms("bench")
        print(
            f"| {phase.name} | {phase.count} | {phase.seconds:.2f} | {phase.per_s:,.0f} "
            f"| {ratio:.3f} | {fmt_ms(mine)} | {fmt_ms(phase.cpu_ms('postgres'))} "
            f"| {fmt_ms(phase.cpu_ms('receiver'))} | {phase.host_busy:.0f} |"
        )
    print()
    for phase in phases:
        for note in phase.notes:
            print(f"- {phase.name}: {note}")
        if phase.name.startswith("Formula Ops") and base and base.per_s:
            ratio = phase.per_s / base.per_s
            verdict = "met" if ratio >= GOAL else f"missed ({GOAL / ratio:.1f}x short)"
            print(f"- {phase.name}: ratio {ratio:.3f} to baseline A; goal >= {GOAL:.0%}: {verdict}")
        if phase.name.endswith("in-process") or "inprocess" in phase.name:
            print(f"- {phase.name}: CPU is the bench process's (writing and polling included)")
    print(json.dumps({p.name: {"per_s": p.per_s, "cpu": p.cpu} for p in phases}), file=sys.stderr)


# -- main -----------------------------------------------------------------------------------


@contextmanager
def scratch_database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        url = f"sqlite:///{directory / 'bench.db'}"
        migrate.upgrade(Settings(database_url=SecretStr(url), state_dir=directory))
        yield url
        return
    with scratch_postgres(f"formula_ops_bench_webhooks_{os.getpid()}", directory) as url:
        yield url


async def measure(
    args: argparse.Namespace,
    database_url: str,
    redis_port: int,
    redis_pid: int,
    receiver_port: int,
    receiver_pid: int,
    directory: Path,
) -> list[Phase]:
    url = f"http://127.0.0.1:{receiver_port}/hook"
    body = sample_body()
    groups = {"receiver": [receiver_pid], "redis": [redis_pid]}
    phases = []
    for name in ("aiohttp (baseline A)", "httpx (baseline B)"):
        print(f"{name} ...", file=sys.stderr)
        phases.append(await client_phase(name, url, body, args, Meter(groups)))
    for mode in args.modes:
        for batch_size in args.batch_sizes:
            print(f"Formula Ops, {mode}, batch size {batch_size} ...", file=sys.stderr)
            phases.append(
                await system_phase(
                    mode, batch_size, database_url, redis_port, url, args, directory, groups
                )
            )
    for phase in phases:
        if "worker" in phase.cpu:
            phase.notes.append(f"bench process CPU {fmt_ms(phase.cpu_ms('bench'))} ms each")
    return phases


def _terminate(signum: int, _: Any) -> NoReturn:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=100, help="events per transaction")
    parser.add_argument("--concurrency", type=int, default=32, help="baselines' concurrency")
    parser.add_argument("--seconds", type=float, default=5.0, help="baselines' duration")
    parser.add_argument("--timeout", type=float, default=300.0, help="a system phase's limit")
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--modes", nargs="+", choices=("subprocess", "inprocess"), default=["subprocess"]
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[WebhookSettings().batch_size],
        metavar="N",
        help="FORMULA_OPS_WEBHOOKS__BATCH_SIZE, one system phase per mode and value",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="`formula-ops worker --processes N`"
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile of the in-process phase")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.receiver:
        run_receiver(args.receiver)
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _terminate)
    load = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="formula-ops-bench-") as tmp,
        scratch_database(args.backend, Path(tmp)) as database_url,
        redis_server(Path(tmp)) as (redis_port, redis_pid),
        receiver(Path(tmp)) as (receiver_port, receiver_pid),
    ):
        phases = asyncio.run(
            measure(
                args, database_url, redis_port, redis_pid, receiver_port, receiver_pid, Path(tmp)
            )
        )
    header = (
        f"{args.backend}, {os.cpu_count()} CPUs, load average before "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; body {len(sample_body())} bytes; "
        f"baselines: concurrency {args.concurrency} for {args.seconds:g} s; system: "
        f"{args.events} events x 1 endpoint, written in transactions of {args.chunk}"
    )
    report(phases, header)
    write_json(args.json, "bench_webhooks", figures(phases, args), header=header)


def figures(phases: list[Phase], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The figures for ``--json``: each Formula Ops phase beside baseline A."""
    base = next((p for p in phases if p.name.startswith("aiohttp")), None)
    found = []
    for phase in phases:
        if not phase.name.startswith("Formula Ops"):
            continue
        ratio = phase.per_s / base.per_s if base and base.per_s else None
        found.append(
            figure(
                f"webhook deliveries/s, {phase.name} ({args.events} events)",
                phase.per_s,
                "/s",
                baseline=base.per_s if base else None,
                baseline_name="raw aiohttp POSTs",
                goal=f"ratio >= {GOAL:g}",
                met=ratio is not None and ratio >= GOAL,
            )
        )
        mine = phase.cpu_ms("worker") if "worker" in phase.cpu else phase.cpu_ms("bench")
        if mine is not None:
            found.append(
                figure(
                    f"webhook worker CPU per delivery, {phase.name}",
                    mine,
                    "ms",
                    baseline=base.cpu_ms("bench") if base else None,
                    baseline_name="raw aiohttp client per POST",
                )
            )
    return found


if __name__ == "__main__":
    main()
