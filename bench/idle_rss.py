"""Idle memory of ``formula-ops api`` and ``formula-ops worker`` beside a bare FastAPI app
under uvicorn and a bare arq worker, measured in the same run.

A scratch PostgreSQL database (``formula_ops_bench_rss_<pid>``, migrated) and a private
``redis-server`` on a free port. Each server is started in a process (and session) of its
own, waited for (the API until ``GET /health`` answers 200, which also makes it open its
database pool; a worker until each of its processes announced itself and polled once),
then left idle for ``--idle-seconds``; then, for each of its processes, ``VmRSS`` (what
``ps`` and most dashboards show; pages shared with other processes counted in full) and
``Pss`` (shared pages divided among the processes sharing them: what a group of processes
costs together) from ``/proc/<pid>/smaps_rollup``:

- ``formula-ops api`` (one process) beside a bare FastAPI app (``GET /health`` under
  uvicorn, nothing else imported);
- ``formula-ops worker`` (one process) and ``formula-ops worker --processes N`` (a
  supervisor and N workers: each process is reported, the goal is per worker process)
  beside a bare arq ``Worker`` (arq and a no-op job, nothing else imported).

Goals (the issue's): idle RSS of the API ≤ 120 MB, of a worker process ≤ 100 MB. Nothing
is asserted. Everything is removed at the end, also on error, Ctrl-C or SIGTERM.

    .venv/bin/python bench/idle_rss.py [--idle-seconds 10] [--processes 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import redis
from common import (
    REPO_ROOT,
    add_json_option,
    figure,
    free_port,
    log_tail,
    scratch_postgres,
    started_server,
    write_json,
)
from run_latency import announced, formula_ops_command, process_tree, redis_server, running

GOAL_API_MB = 120.0
GOAL_WORKER_MB = 100.0
# The baseline API: FastAPI's one ``GET /health`` under uvicorn, nothing else imported.
BARE_API = """
import sys
import uvicorn
from fastapi import FastAPI

bare = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

@bare.get("/health")
async def health():
    return {"status": "ok"}

uvicorn.run(bare, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False)
"""
# The baseline worker: arq and its one no-op job, nothing else imported.
BARE_ARQ_WORKER = """
import sys
from arq.connections import RedisSettings
from arq.worker import Worker, func

async def noop(ctx):
    return None

Worker(
    functions=[func(noop, name="noop")],
    redis_settings=RedisSettings(host="127.0.0.1", port=int(sys.argv[2])),
    queue_name=sys.argv[1],
    health_check_key=sys.argv[1] + ":health-check",
).run()
"""


@dataclass
class Memory:
    pid: int
    role: str
    rss_mb: float
    pss_mb: float


def memory(pid: int, role: str) -> Memory:
    def field(path: str, name: str) -> float:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    return Memory(
        pid,
        role,
        field(f"/proc/{pid}/status", "VmRSS"),
        field(f"/proc/{pid}/smaps_rollup", "Pss"),
    )


def env_for(database_url: str, redis_port: int, directory: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    path = env.get("PYTHONPATH")
    return env | {
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT),
        "FORMULA_OPS_DATABASE_URL": database_url,
        "FORMULA_OPS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "FORMULA_OPS_QUEUE_NAME": f"bench:rss:{name}",
        "FORMULA_OPS_REDIS_PREFIX": f"bench-rss-{name}",
        "FORMULA_OPS_STATE_DIR": str(directory),
        "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
        "FORMULA_OPS_HOST": "127.0.0.1",
    }


def server_memory(argv: list[str], env: dict[str, str], log: Path, idle: float) -> list[Memory]:
    port = int(env["BENCH_PORT"])
    with started_server(argv[0], argv, env, log, port) as process:
        time.sleep(idle)
        return [memory(pid, "api") for pid in process_tree(process.pid)]


@contextmanager
def worker(
    argv: list[str], env: dict[str, str], log: Path, redis_port: int, key: str, processes: int
) -> Iterator[subprocess.Popen[bytes]]:
    """Until the worker polled once (its health-check key) and ``processes`` of its
    processes announced their start in ``log``."""
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    with running(argv, log, env) as process:
        deadline = time.monotonic() + 90
        while not client.exists(key) or announced(log) < processes:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{log_tail(log)}")
            time.sleep(0.1)
        client.close()
        yield process


def worker_memory(
    argv: list[str],
    env: dict[str, str],
    log: Path,
    redis_port: int,
    key: str,
    processes: int,
    idle: float,
) -> list[Memory]:
    with worker(argv, env, log, redis_port, key, processes) as process:
        time.sleep(idle)
        pids = process_tree(process.pid)
        if processes == 1:
            return [memory(pid, "worker") for pid in pids]
        return [memory(pids[0], "supervisor")] + [memory(pid, "worker") for pid in pids[1:]]


def measure(
    database_url: str, redis_port: int, directory: Path, args: argparse.Namespace
) -> dict[str, list[Memory]]:
    found: dict[str, list[Memory]] = {}
    python = sys.executable

    def env(name: str, port: int | None = None) -> dict[str, str]:
        values = env_for(database_url, redis_port, directory, name)
        if port is not None:
            values |= {"FORMULA_OPS_PORT": str(port), "BENCH_PORT": str(port)}
        return values

    print("bare FastAPI app ...", file=sys.stderr)
    port = free_port()
    argv = [python, "-c", BARE_API, str(port)]
    found["bare FastAPI + uvicorn"] = server_memory(
        argv, env("bare-api", port), directory / "bare-api.log", args.idle_seconds
    )
    print("formula-ops api ...", file=sys.stderr)
    port = free_port()
    argv = [formula_ops_command(1)[0], "api"]
    found["formula-ops api"] = server_memory(
        argv, env("api", port), directory / "api.log", args.idle_seconds
    )
    print("bare arq worker ...", file=sys.stderr)
    queue = f"bench:rss:arq-{os.getpid()}"
    argv = [python, "-c", BARE_ARQ_WORKER, queue, str(redis_port)]
    with worker(
        argv, env("arq"), directory / "arq.log", redis_port, f"{queue}:health-check", 0
    ) as process:
        time.sleep(args.idle_seconds)
        found["bare arq worker"] = [memory(pid, "worker") for pid in process_tree(process.pid)]
    for processes in (1, args.processes):
        print(f"formula-ops worker, {processes} process(es) ...", file=sys.stderr)
        name = f"worker-{processes}-{os.getpid()}"
        found[f"formula-ops worker --processes {processes}"] = worker_memory(
            formula_ops_command(processes),
            env(name),
            directory / f"{name}.log",
            redis_port,
            f"bench:rss:{name}:health-check",
            processes,
            args.idle_seconds,
        )
    return found


def report(found: dict[str, list[Memory]], args: argparse.Namespace, header: str) -> None:
    print(header)
    title = f"{'server':<36} {'process':<11} {'pid':>8} {'RSS MB':>8} {'PSS MB':>8}"
    print(title)
    print("-" * len(title))
    for name, rows in found.items():
        for m in rows:
            print(f"{name:<36} {m.role:<11} {m.pid:>8} {m.rss_mb:>8.1f} {m.pss_mb:>8.1f}")
        if len(rows) > 1:
            rss, pss = sum(m.rss_mb for m in rows), sum(m.pss_mb for m in rows)
            print(f"{name:<36} {'all':<11} {'':>8} {rss:>8.1f} {pss:>8.1f}")
    print(
        f"after start-up and {args.idle_seconds:g} s idle; RSS: VmRSS (shared pages counted in"
        " each process); PSS: shared pages divided among the processes sharing them;\n"
        f"goals: API <= {GOAL_API_MB:g} MB, each worker process <= {GOAL_WORKER_MB:g} MB (RSS)"
    )


def figures(found: dict[str, list[Memory]], args: argparse.Namespace) -> list[dict[str, Any]]:
    bare_api = max(m.rss_mb for m in found["bare FastAPI + uvicorn"])
    bare_worker = max(m.rss_mb for m in found["bare arq worker"])
    api = max(m.rss_mb for m in found["formula-ops api"])
    result = [
        figure(
            "idle RSS, formula-ops api",
            api,
            "MB",
            baseline=bare_api,
            baseline_name="bare FastAPI + uvicorn",
            goal=f"<= {GOAL_API_MB:g} MB",
            met=api <= GOAL_API_MB,
        )
    ]
    for processes in (1, args.processes):
        rows = found[f"formula-ops worker --processes {processes}"]
        workers = [m for m in rows if m.role == "worker"]
        largest = max(m.rss_mb for m in workers)
        label = f"idle RSS, formula-ops worker --processes {processes}"
        result.append(
            figure(
                f"{label}, largest worker process",
                largest,
                "MB",
                baseline=bare_worker,
                baseline_name="bare arq worker",
                goal=f"<= {GOAL_WORKER_MB:g} MB",
                met=largest <= GOAL_WORKER_MB,
            )
        )
        if processes > 1:
            supervisor = next(m for m in rows if m.role == "supervisor")
            result.append(
                figure(
                    f"{label}, supervisor process",
                    supervisor.rss_mb,
                    "MB",
                    baseline=bare_worker,
                    baseline_name="bare arq worker",
                )
            )
            result.append(
                figure(
                    f"{label}, all {len(rows)} processes together (PSS)",
                    sum(m.pss_mb for m in rows),
                    "MB",
                    baseline=bare_worker * processes,
                    baseline_name=f"{processes} x bare arq worker (RSS)",
                )
            )
    return result


def _terminate(signum: int, _frame: Any) -> NoReturn:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=3, help="worker --processes N")
    add_json_option(parser)
    args = parser.parse_args()
    if args.idle_seconds < 0 or args.processes < 2:
        parser.error("--idle-seconds must not be negative, --processes at least 2")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _terminate)
    with (
        tempfile.TemporaryDirectory(prefix="formula-ops-bench-") as tmp,
        scratch_postgres(f"formula_ops_bench_rss_{os.getpid()}", Path(tmp)) as url,
        redis_server(Path(tmp)) as (redis_port, _),
    ):
        found = measure(url, redis_port, Path(tmp), args)
    header = f"PostgreSQL, private redis-server, Python {sys.version.split()[0]}"
    report(found, args, header)
    write_json(args.json, "idle_rss", figures(found, args), header=header)


if __name__ == "__main__":
    main()
