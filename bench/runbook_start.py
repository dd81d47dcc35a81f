"""What the runbook catalog costs: loading and validating it at start-up, and starting a
runbook's run, each beside a baseline measured in the same run.

- **catalog load**: loading the shipped catalog uncached (YAML parsed twice by libyaml — a
  node tree for line numbers and the values —, the schema, each step's arguments against
  its action) against ``yaml.safe_load`` of the same files (the baseline: pure-Python
  parsing alone, what the loader used before). Median of ``--loads`` loads; and a cached
  load (what every later application context of a process pays).
- **start a run**: ``POST /v1/runbooks/db-active-queries/runs`` (parameters checked, the
  plan resolved and validated, the run, its steps, audit record and event written, the job
  enqueued) against ``POST /v1/health-checks`` (a run of similar size planned from settings
  and the services table: the baseline), and the runbook's ``dry_run``; ``--requests``
  sequential requests each, in process (ASGI, no network), median and p95 latency.

Runs on a scratch PostgreSQL database (migrated) and a Redis prefix of its own; no worker
runs, so the runs stay queued. Prints the figures and their ratios; asserts nothing.

    .venv/bin/python bench/runbook_start.py [--requests 300] [--loads 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import yaml
from common import (
    REDIS_URL,
    REPO_ROOT,
    add_json_option,
    figure,
    percentile,
    scratch_postgres,
    write_json,
)
from pydantic import SecretStr

sys.path.insert(0, str(REPO_ROOT))  # tests.factories issues the token

from app.auth.roles import Role
from app.bootstrap import build_context, build_registry
from app.core.settings import RunbookSettings, Settings
from app.environments.models import Environment
from app.main import create_app
from app.runbooks.catalog import _load as load_uncached
from app.runbooks.catalog import load_catalog
from tests.factories import issue_token


def catalog_load(loads: int) -> tuple[float, float, int]:
    folders = RunbookSettings().catalog_dirs
    registry = build_registry()
    files = [p for folder in folders for p in sorted(folder.rglob("*.yaml"))]
    parse, full = [], []
    for _ in range(loads):
        began = time.perf_counter()
        for path in files:
            yaml.safe_load(path.read_text())
        parse.append(time.perf_counter() - began)
        began = time.perf_counter()
        load_uncached(folders, registry)
        full.append(time.perf_counter() - began)
    load_catalog(folders, registry)
    began = time.perf_counter()
    load_catalog(folders, registry)  # a later context of the same process: cached
    print(f"catalog load, cached: {(time.perf_counter() - began) * 1000:.2f} ms")
    return statistics.median(full) * 1000, statistics.median(parse) * 1000, len(files)


async def timed(
    http: httpx.AsyncClient, path: str, body: dict[str, object] | None, headers: dict[str, str]
) -> float:
    began = time.perf_counter()
    response = await http.post(path, json=body, headers=headers)
    took = time.perf_counter() - began
    if response.status_code not in (200, 202):
        raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
    return took * 1000


async def starts(url: str, state: Path, requests: int) -> dict[str, list[float]]:
    prefix = f"formula-ops-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        state_dir=state,
        database_url=SecretStr(url),
        redis_url=SecretStr(REDIS_URL),
        queue_name=f"{prefix}:queue",
        redis_prefix=prefix,
        log_level="WARNING",
    )
    context = build_context(settings)
    try:
        async with context.unit_of_work() as uow:
            uow.session.add(Environment(name="bench", database_url=url))
        token = await issue_token(context, Role.OPERATOR)
        app = create_app(settings, context=context)
        transport = httpx.ASGITransport(app=app)
        phases: dict[str, tuple[str, dict[str, object] | None]] = {
            "baseline: POST /v1/health-checks": ("/v1/health-checks", None),
            "POST /v1/runbooks/db-active-queries/runs": (
                "/v1/runbooks/db-active-queries/runs",
                {"parameters": {"environment": "bench"}},
            ),
            "  the same, dry_run": (
                "/v1/runbooks/db-active-queries/runs",
                {"parameters": {"environment": "bench"}, "dry_run": True},
            ),
        }
        results: dict[str, list[float]] = {}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            for name, (path, body) in phases.items():
                for _ in range(20):  # warm-up
                    await timed(http, path, body, token.headers)
                results[name] = [
                    await timed(http, path, body, token.headers) for _ in range(requests)
                ]
        keys = [k async for k in context.redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await context.redis.delete(*keys)
        return results
    finally:
        await context.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--loads", type=int, default=20)
    add_json_option(parser)
    args = parser.parse_args()

    full, parse, files = catalog_load(args.loads)
    print(f"catalog load ({files} files): {full:.1f} ms; yaml.safe_load alone {parse:.1f} ms;")
    print(f"  ratio {full / parse:.2f}")

    with (
        tempfile.TemporaryDirectory() as state,
        scratch_postgres(f"formula_ops_bench_runbooks_{uuid.uuid4().hex[:6]}", Path(state)) as url,
    ):
        results = asyncio.run(starts(url, Path(state), args.requests))
    base = statistics.median(next(iter(results.values())))
    print(f"\n{'request':45} {'median ms':>10} {'p95 ms':>8} {'ratio':>6}")
    for name, values in results.items():
        median = statistics.median(values)
        p95 = percentile(values, 95)
        print(f"{name:45} {median:10.2f} {p95:8.2f} {median / base:6.2f}")
    names = list(results)
    start, base_values = results[names[1]], results[names[0]]
    start_p95 = percentile(start, 95)
    write_json(
        args.json,
        "runbook_start",
        [
            figure(
                f"runbook catalog load, uncached ({files} files), median",
                full,
                "ms",
                baseline=parse,
                baseline_name="yaml.safe_load alone",
                goal="ratio <= 1",
                met=full <= parse,
            ),
            figure(
                f"POST /v1/runbooks/{{name}}/runs ({args.requests} in process), median",
                statistics.median(start),
                "ms",
                baseline=base,
                baseline_name="POST /v1/health-checks",
                goal="ratio <= 1",
                met=statistics.median(start) <= base,
            ),
            figure(
                "POST /v1/runbooks/{name}/runs, p95",
                start_p95,
                "ms",
                baseline=percentile(base_values, 95),
                baseline_name="POST /v1/health-checks",
                goal="< 500 ms",
                met=start_p95 < 500,
            ),
        ],
    )


if __name__ == "__main__":
    main()
