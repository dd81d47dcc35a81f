"""Throughput of health checks created and finished, with 1 or 2 API processes and 1 or 3
worker processes, beside one API process and one worker process in the same run.

A scratch PostgreSQL database (``formula_ops_bench_scaling_<pid>``, migrated by
``app.core.migrate.upgrade``) and a private ``redis-server`` on a free port; an operator
token. Then, for each configuration of ``--configs`` (``A:W``: ``formula-ops api
--workers A`` and ``formula-ops worker --processes W``, both real processes of the
installed command, each configuration with its own queue name and Redis prefix), a fixed
workload: ``--checks`` ``POST /v1/health-checks`` sent by ``--clients`` keep-alive
connections back to back (the health check probes the API's own ``/health``, the disk,
memory, the backups' age, PostgreSQL and Redis: seven steps), then the bench polls the
database until every one of those runs has finished (whatever its status). It prints,
per configuration:

- **done/s**: runs created and finished per second, from the first request sent to the
  last run's ``finished_at``; its ratio to the first configuration's (the baseline, ``1:1``
  by default);
- **created/s**: requests answered per second while sending, and its ratio;
- p50 / p95 of the requests, failed requests (not 202);
- CPU seconds of the API and the worker processes (all of them) and the host's busyness.

Nothing is asserted; on a machine with few cores more processes mostly share the same
cores. Processes, Redis and the database are removed at the end, also on error, Ctrl-C or
SIGTERM.

    .venv/bin/python bench/scaling.py [--checks 150] [--clients 8] [--configs 1:1 2:1 1:3 2:3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psycopg
from common import (
    REPO_ROOT,
    add_json_option,
    figure,
    free_port,
    host_ticks,
    log_tail,
    percentile,
    scratch_postgres,
    started_server,
    total_cpu_seconds,
    write_json,
)
from pydantic import SecretStr
from run_latency import announced, formula_ops_command, process_tree, redis_server, running

from app.core.settings import Settings

GOAL_P95_MS = 500.0  # the runbook's service level
GOAL_ERROR_PERCENT = 1.0


@dataclass
class Config:
    api: int
    worker: int

    @property
    def name(self) -> str:
        return f"{self.api} API + {self.worker} worker"


@dataclass
class Result:
    config: Config
    checks: int = 0
    done_s: float = math.nan  # first request -> last finished_at
    sent_s: float = math.nan  # first request -> last answer
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    cpu_api: float = 0.0
    cpu_worker: float = 0.0
    host_busy: float = math.nan
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def done_per_s(self) -> float:
        return self.checks / self.done_s if self.done_s else math.nan

    @property
    def created_per_s(self) -> float:
        return self.checks / self.sent_s if self.sent_s else math.nan


def parse_config(text: str) -> Config:
    api, _, worker = text.partition(":")
    try:
        config = Config(int(api), int(worker))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected A:W, e.g. 2:3") from None
    if config.api < 1 or config.worker < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least one process each")
    return config


def command() -> str:
    return formula_ops_command(1)[0]


def base_env(database_url: str, redis_port: int, directory: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    path = env.get("PYTHONPATH")
    return env | {
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT),
        "FORMULA_OPS_DATABASE_URL": database_url,
        "FORMULA_OPS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "FORMULA_OPS_QUEUE_NAME": f"bench:scaling:{name}",
        "FORMULA_OPS_REDIS_PREFIX": f"bench-scaling-{name}",
        "FORMULA_OPS_STATE_DIR": str(directory),
        "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
        "FORMULA_OPS_TOKEN_REQUESTS_PER_MINUTE": "1000000000",
        "FORMULA_OPS_HOST": "127.0.0.1",
    }


async def issue_token(database_url: str, redis_port: int, directory: Path) -> str:
    from app.auth.principal import Principal
    from app.auth.roles import Role
    from app.bootstrap import build_context
    from app.tokens import service as token_service
    from app.tokens.schemas import TokenCreate

    settings = Settings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(f"redis://127.0.0.1:{redis_port}/0"),
        state_dir=directory,
    )
    context = build_context(settings)
    try:
        body = TokenCreate(name="bench operator", role=Role.OPERATOR, expires_in_days=1)
        async with context.unit_of_work() as uow:
            _, value = await token_service.create(uow, Principal.system("bench"), body)
    finally:
        await context.aclose()
    return value


async def send_all(port: int, token: str, checks: int, clients: int, result: Result) -> list[str]:
    """``checks`` POSTs over ``clients`` connections back to back; the created runs' ids."""
    ids: list[str] = []
    remaining = iter(range(checks))
    headers = {"Authorization": f"Bearer {token}"}

    async def client() -> None:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60
        ) as http:
            for _ in remaining:
                started = time.monotonic()
                try:
                    response = await http.post(
                        "/v1/health-checks", headers={"Idempotency-Key": uuid.uuid4().hex}
                    )
                except httpx.HTTPError as exc:
                    result.errors += 1
                    result.latencies_ms.append(math.inf)
                    if len(result.samples) < 3:
                        result.samples.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 202:
                    result.errors += 1
                    result.latencies_ms.append(math.inf)
                    if len(result.samples) < 3:
                        result.samples.append(f"{response.status_code} {response.text[:200]}")
                    continue
                result.latencies_ms.append((time.monotonic() - started) * 1000)
                ids.append(response.json()["id"])

    await asyncio.gather(*(client() for _ in range(clients)))
    return ids


def finished(database_url: str, ids: list[str]) -> tuple[int, float | None, dict[str, int]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT status, finished_at FROM run WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    ends = [at.timestamp() for _, at in rows if at is not None]
    statuses: dict[str, int] = {}
    for status, _ in rows:
        statuses[status] = statuses.get(status, 0) + 1
    return len(ends), max(ends) if ends else None, statuses


@contextmanager
def system(
    config: Config, database_url: str, redis_port: int, directory: Path
) -> Iterator[tuple[int, list[int], list[int]]]:
    """The API and worker processes of ``config``; yields (port, API pids, worker pids)."""
    name = f"{config.api}-{config.worker}-{os.getpid()}"
    port = free_port()
    env = base_env(database_url, redis_port, directory, name) | {"FORMULA_OPS_PORT": str(port)}
    api_argv = [command(), "api", *(["--workers", str(config.api)] if config.api > 1 else [])]
    worker_argv = formula_ops_command(config.worker)
    api_log, worker_log = directory / f"api-{name}.log", directory / f"worker-{name}.log"
    with (
        started_server("formula-ops api", api_argv, env, api_log, port, timeout=180) as api,
        running(worker_argv, worker_log, env) as worker,
    ):
        deadline = time.monotonic() + 90
        while announced(worker_log) < config.worker:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{log_tail(worker_log)}")
            time.sleep(0.1)
        while len(process_tree(api.pid)) < 1 + (config.api if config.api > 1 else 0):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API processes did not start:\n{log_tail(api_log)}")
            time.sleep(0.1)
        api_pids, worker_pids = process_tree(api.pid), process_tree(worker.pid)
        settle(api_pids + worker_pids)  # start-up work (imports, first reconciler run)
        yield port, api_pids, worker_pids
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{log_tail(worker_log)}")


def settle(pids: list[int], seconds: float = 30.0) -> None:
    """Until ``pids`` together use under 10 % of a core over half a second."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = total_cpu_seconds(pids)
        time.sleep(0.5)
        if total_cpu_seconds(pids) - before < 0.05:
            return


def measure(
    config: Config,
    database_url: str,
    redis_port: int,
    token: str,
    args: argparse.Namespace,
    directory: Path,
) -> Result:
    result = Result(config, checks=args.checks)
    with system(config, database_url, redis_port, directory) as (port, api_pids, worker_pids):
        api_before, worker_before = total_cpu_seconds(api_pids), total_cpu_seconds(worker_pids)
        host_before = host_ticks()
        first = time.time()
        ids = asyncio.run(send_all(port, token, args.checks, args.clients, result))
        result.sent_s = time.time() - first
        deadline = time.monotonic() + args.timeout
        last: float | None = None
        while time.monotonic() < deadline:
            count, last, result.statuses = finished(database_url, ids)
            if count >= len(ids):
                break
            time.sleep(0.1)
        else:
            result.samples.append(f"only {count} of {len(ids)} runs finished in {args.timeout} s")
        busy, total = host_ticks()
        result.host_busy = (busy - host_before[0]) / max(1, total - host_before[1]) * 100
        result.cpu_api = total_cpu_seconds(api_pids) - api_before
        result.cpu_worker = total_cpu_seconds(worker_pids) - worker_before
        result.checks = len(ids)
        result.done_s = (last - first) if last is not None else math.nan
    return result


def report(results: list[Result], args: argparse.Namespace, header: str) -> None:
    print(header)
    base = results[0]
    title = (
        f"{'configuration':<22} {'done/s':>7} {'ratio':>6} {'created/s':>9} {'ratio':>6}"
        f" {'p50 ms':>7} {'p95 ms':>7} {'failed':>6} {'API CPU s':>9} {'worker CPU s':>12}"
        f" {'host %':>6}"
    )
    print(title)
    print("-" * len(title))
    for r in results:
        print(
            f"{r.config.name:<22} {r.done_per_s:>7.1f} {r.done_per_s / base.done_per_s:>6.2f}"
            f" {r.created_per_s:>9.1f} {r.created_per_s / base.created_per_s:>6.2f}"
            f" {percentile(r.latencies_ms, 50):>7.1f} {percentile(r.latencies_ms, 95):>7.1f}"
            f" {r.errors:>6} {r.cpu_api:>9.1f} {r.cpu_worker:>12.1f} {r.host_busy:>6.0f}"
        )
    print(
        f"done/s: {args.checks} health checks created and finished per second (first request"
        " to the last run's finished_at);\ncreated/s: answers per second while sending"
        f" ({args.clients} connections back to back); ratio: to {base.config.name};"
        "\np50/p95: of the POSTs; API CPU s, worker CPU s: all the processes of each, over"
        " the workload; host %: all cores busy"
    )
    for r in results:
        print(f"{r.config.name}: run statuses {r.statuses}")
        for sample in r.samples:
            print(f"{r.config.name}: {sample}")


def figures(results: list[Result], args: argparse.Namespace) -> list[dict[str, Any]]:
    base = results[0]
    found = []
    for r in results[1:]:
        found.append(
            figure(
                f"health checks created + finished/s, {r.config.name} ({args.checks} checks)",
                r.done_per_s,
                "/s",
                baseline=base.done_per_s,
                baseline_name=base.config.name,
            )
        )
        found.append(
            figure(
                f"health checks created/s (answered), {r.config.name}",
                r.created_per_s,
                "/s",
                baseline=base.created_per_s,
                baseline_name=base.config.name,
            )
        )
    for r in results:
        if not r.latencies_ms:
            continue  # not measured
        p95 = percentile(r.latencies_ms, 95)
        found.append(
            figure(
                f"POST /v1/health-checks p95 under the workload, {r.config.name}",
                p95,
                "ms",
                baseline=percentile(base.latencies_ms, 95) if r is not base else None,
                baseline_name=base.config.name if r is not base else "",
                goal=f"< {GOAL_P95_MS:g} ms",
                met=p95 < GOAL_P95_MS,
            )
        )
        rate = r.errors / max(1, len(r.latencies_ms)) * 100
        found.append(
            figure(
                f"POST /v1/health-checks failed, {r.config.name}",
                rate,
                "%",
                goal=f"< {GOAL_ERROR_PERCENT:g} %",
                met=rate < GOAL_ERROR_PERCENT,
            )
        )
    return found


def _terminate(signum: int, _frame: Any) -> NoReturn:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=150, help="health checks per config")
    parser.add_argument("--clients", type=int, default=8, help="connections sending")
    parser.add_argument("--timeout", type=float, default=300.0, help="a workload's limit, s")
    parser.add_argument(
        "--configs",
        type=parse_config,
        nargs="+",
        default=[Config(1, 1), Config(2, 1), Config(1, 3), Config(2, 3)],
        metavar="A:W",
        help="API processes : worker processes; the first is the baseline",
    )
    add_json_option(parser)
    args = parser.parse_args()
    if args.checks < 1 or args.clients < 1:
        parser.error("--checks and --clients must be at least 1")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _terminate)
    load = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="formula-ops-bench-") as tmp,
        scratch_postgres(f"formula_ops_bench_scaling_{os.getpid()}", Path(tmp)) as url,
        redis_server(Path(tmp)) as (redis_port, _),
    ):
        directory = Path(tmp)
        token = asyncio.run(issue_token(url, redis_port, directory))
        results = []
        for config in args.configs:
            print(f"{config.name} ...", file=sys.stderr)
            try:
                results.append(measure(config, url, redis_port, token, args, directory))
            except RuntimeError as exc:  # a configuration that did not start: the others run
                if not results:
                    raise
                print(f"{config.name}: {exc}", file=sys.stderr)
                failed = Result(config, checks=0)
                failed.samples.append(f"not measured: {str(exc)[:300]}")
                results.append(failed)
    header = (
        f"PostgreSQL, private redis-server, {os.cpu_count()} CPUs, load average before"
        f" {load[0]:.2f}; {args.checks} POST /v1/health-checks (7 probe steps each) per"
        f" configuration over {args.clients} connections"
    )
    report(results, args, header)
    write_json(args.json, "scaling", figures(results, args), header=header)
    print(json.dumps({r.config.name: r.statuses for r in results}), file=sys.stderr)


if __name__ == "__main__":
    main()
