"""Latency of the audit-trail listing queries on a large ``audit_event`` table.

Creates a scratch PostgreSQL database, builds its schema with the Alembic migrations,
bulk-inserts synthetic events, then times each listing query exactly as the API sends
it (the statement of ``app.audit.service.list_page``, compiled by SQLAlchemy for
psycopg) against the same query with index and bitmap scans switched off. The scratch
database is dropped at the end, also on error or Ctrl-C.

    .venv/bin/python bench/audit_list.py [--rows 1000000] [--runs 20]

Environment: ``FORMULA_OPS_BENCH_PG_ADMIN_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) names a database to connect to for
``CREATE DATABASE`` / ``DROP DATABASE``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from common import add_json_option, figure, write_json
from pydantic import SecretStr

from app.audit import service
from app.audit.models import Outcome
from app.core import migrate
from app.core.pagination import DEFAULT_LIMIT, Cursor, CursorParams
from app.core.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "FORMULA_OPS_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DAYS = 180
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
BASELINE = ("SET enable_indexscan = off", "SET enable_bitmapscan = off")

# Append-only and written in seq order, so created_at grows with seq (and with the
# physical order of the rows), as in the real table. Actors and actions are skewed
# (a few busy tokens, a few frequent actions); 3 % of events are denials, 2 % failures.
INSERT_EVENTS = """
WITH base AS (
    SELECT g,
           %(start)s::timestamptz + (g - 1) * %(step)s::interval
               + random() * %(step)s::interval AS ts,
           floor(50 * power(random(), 2))::int AS actor_n,
           1 + floor(19 * power(random(), 1.5))::int AS action_n,
           1 + floor(5 * random())::int AS type_n,
           floor(2000 * power(random(), 3))::int AS resource_n,
           random() AS o,
           md5(random()::text) AS r
    FROM generate_series(1, %(rows)s) AS g
), shaped AS (
    SELECT g, ts, actor_n, type_n, resource_n, r,
           lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') AS ts_hex,
           CASE WHEN o < 0.03 THEN 'denied' WHEN o < 0.05 THEN 'failed'
                ELSE 'success' END AS outcome,
           (ARRAY['run.create', 'run.cancel', 'run.retry', 'run.approve', 'run.read',
                  'token.create', 'token.revoke', 'token.rotate', 'environment.create',
                  'environment.update', 'environment.delete', 'backup.create',
                  'backup.restore', 'backup.delete', 'formula.create', 'formula.update',
                  'formula.publish', 'formula.delete', 'audit.verify'])[action_n] AS action,
           (ARRAY['run', 'token', 'environment', 'backup', 'formula'])[type_n] AS rtype
    FROM base
)
INSERT INTO audit_event (
    id, seq, created_at, actor_token_id, actor_name, actor_role, client_address,
    request_id, action, resource_type, resource_id, outcome, summary, prev_hash, hash
)
SELECT substr(ts_hex, 1, 8) || '-' || substr(ts_hex, 9, 4) || '-7' || substr(r, 1, 3)
           || '-8' || substr(r, 4, 3) || '-' || substr(r, 7, 12),
       g,
       ts,
       CASE WHEN outcome = 'denied' AND mod(g, 2) = 0 THEN NULL
            ELSE upper(substr(md5('actor' || actor_n), 1, 16)) END,
       CASE WHEN outcome = 'denied' AND mod(g, 2) = 0 THEN NULL ELSE 'actor-' || actor_n END,
       CASE WHEN outcome = 'denied' AND mod(g, 2) = 0 THEN NULL
            ELSE (ARRAY['admin', 'operator', 'viewer'])[1 + mod(actor_n, 3)] END,
       '10.0.' || mod(actor_n, 8) || '.' || mod(actor_n * 5, 250),
       r,
       CASE WHEN outcome = 'denied' THEN 'auth.denied' ELSE action END,
       CASE WHEN outcome = 'denied' THEN NULL ELSE rtype END,
       CASE WHEN outcome = 'denied' THEN NULL ELSE rtype || '-' || resource_n END,
       outcome,
       '{}'::json,
       md5(r || 'p') || md5(g::text),
       md5(r || 'h') || md5(g::text)
FROM shaped
"""


@dataclass(frozen=True)
class Query:
    name: str
    sql: str
    params: dict[str, Any]


def listing_sql(
    engine: sa.Engine, filters: service.AuditFilters, cursor: Cursor | None
) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of the page ``GET /v1/audit-events`` reads, as the app
    builds it (``app.audit.service.list_statement``), compiled for this engine."""
    page = CursorParams(limit=DEFAULT_LIMIT, cursor=cursor)
    compiled = service.list_statement(filters, page).compile(dialect=engine.dialect)
    return compiled.string, dict(compiled.params)


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def populate(conn: psycopg.Connection[Any], rows: int) -> None:
    step = dt.timedelta(days=DAYS) / rows
    conn.execute("SELECT setseed(0.42)")
    conn.execute(INSERT_EVENTS, {"start": START, "step": step, "rows": rows})
    conn.execute("ANALYZE audit_event")


def queries(conn: psycopg.Connection[Any], engine: sa.Engine, rows: int) -> list[Query]:
    """The listing queries, with filter values taken from a typical event mid-table."""
    middle = conn.execute(
        "SELECT created_at, id, actor_token_id, action, resource_type, resource_id"
        " FROM audit_event WHERE seq >= %s AND outcome = 'success' ORDER BY seq LIMIT 1",
        (rows // 2,),
    ).fetchone()
    assert middle is not None
    created_at, event_id, actor, action, resource_type, resource_id = middle
    since = START + dt.timedelta(days=DAYS // 2)
    cases = [
        ("first page", service.AuditFilters(), None),
        ("actor", service.AuditFilters(actor=actor), None),
        ("action", service.AuditFilters(action=action), None),
        (
            "resource",
            service.AuditFilters(resource_type=resource_type, resource_id=resource_id),
            None,
        ),
        ("outcome=denied", service.AuditFilters(outcome=Outcome.DENIED), None),
        (
            "time range (7 days)",
            service.AuditFilters(since=since, until=since + dt.timedelta(days=7)),
            None,
        ),
        ("deep page (cursor)", service.AuditFilters(), Cursor(created_at, event_id)),
    ]
    built = []
    for name, filters, cursor in cases:
        sql, params = listing_sql(engine, filters, cursor)
        built.append(Query(name, sql, params))
    return built


def median_ms(conn: psycopg.Connection[Any], query: Query, runs: int) -> float:
    for _ in range(2):  # warm the cache
        conn.execute(query.sql, query.params).fetchall()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        conn.execute(query.sql, query.params).fetchall()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def plan_path(conn: psycopg.Connection[Any], query: Query) -> str:
    """The plan from its top node down its first children, e.g. ``Limit > Index Scan…``."""
    row = conn.execute("EXPLAIN (FORMAT JSON) " + query.sql, query.params).fetchone()
    assert row is not None
    node: dict[str, Any] | None = row[0][0]["Plan"]
    steps = []
    while node is not None:
        step = node["Node Type"]
        if node.get("Scan Direction") == "Backward":
            step += " Backward"
        if "Index Name" in node:
            step += f" ({node['Index Name']})"
        steps.append(step)
        children = node.get("Plans") or [None]
        node = children[0]
    return " > ".join(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per query and mode")
    add_json_option(parser)
    args = parser.parse_args()
    if args.rows < 2 or args.runs < 1:
        parser.error("--rows must be at least 2 and --runs at least 1")

    name = f"formula_ops_bench_{os.getpid()}"
    with scratch_database(name) as url, tempfile.TemporaryDirectory() as state_dir:
        settings = Settings(database_url=SecretStr(url), state_dir=Path(state_dir))
        migrate.upgrade(settings)
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                started = time.perf_counter()
                populate(conn, args.rows)
                print(
                    f"{args.rows:,} audit events inserted and analysed in "
                    f"{time.perf_counter() - started:.1f} s; median of {args.runs} runs"
                )
                results = []
                for query in queries(conn, engine, args.rows):
                    plan = plan_path(conn, query)
                    indexed = median_ms(conn, query, args.runs)
                    for statement in BASELINE:
                        conn.execute(statement)
                    baseline = median_ms(conn, query, args.runs)
                    conn.execute("RESET ALL")
                    results.append((query.name, indexed, baseline, plan))
        finally:
            engine.dispose()
    print_table(results)
    write_json(
        args.json,
        "audit_list",
        [
            figure(
                f"audit list query, {name} ({args.rows:,} events), median",
                indexed,
                "ms",
                baseline=baseline,
                baseline_name="sequential scan",
                goal="ratio < 1 (indexed beats the scan)",
                met=indexed < baseline,
            )
            for name, indexed, baseline, _ in results
        ],
        plans={name: plan for name, _, _, plan in results},
    )


def print_table(results: list[tuple[str, float, float, str]]) -> None:
    header = f"{'query':<20} {'indexed ms':>10} {'baseline ms':>11} {'ratio':>7}  indexed plan"
    print(header)
    print("-" * len(header))
    for name, indexed, baseline, plan in results:
        ratio = baseline / indexed if indexed else float("inf")
        print(f"{name:<20} {indexed:>10.2f} {baseline:>11.2f} {ratio:>6.1f}x  {plan}")


if __name__ == "__main__":
    main()
