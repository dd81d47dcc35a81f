"""The audit listing queries are served by the indexes of ``audit_event`` (PostgreSQL).

The SQL is the statement ``app.audit.service.list_page`` runs, compiled by SQLAlchemy
for psycopg, so a change to the filters or to the keyset ordering that no index serves
any more shows up here as a sequential scan. The table holds enough synthetic events
for the planner to prefer an index whenever one fits.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.rows import dict_row
from pydantic import SecretStr

from app.audit import service
from app.audit.models import Outcome
from app.core import migrate
from app.core.pagination import DEFAULT_LIMIT, Cursor, CursorParams
from app.core.settings import Settings
from tests.helpers import create_pg_database, drop_pg_database, in_thread

ROWS = 20_000
DAYS = 180
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# created_at grows with seq (and with the rows' physical order), as in the append-only
# table; ids are UUIDv7-shaped; actors and actions are skewed; 3 % of events are denials
# (half of them without an actor), 2 % failures.
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
    SELECT *,
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
    id, seq, created_at, actor_token_id, action, resource_type, resource_id, outcome,
    summary, prev_hash, hash
)
SELECT substr(ts_hex, 1, 8) || '-' || substr(ts_hex, 9, 4) || '-7' || substr(r, 1, 3)
           || '-8' || substr(r, 4, 3) || '-' || substr(r, 7, 12),
       g,
       ts,
       CASE WHEN outcome = 'denied' AND mod(g, 2) = 0 THEN NULL
            ELSE upper(substr(md5('actor' || actor_n), 1, 16)) END,
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
class Events:
    """The populated database, and a typical event from the middle of the table."""

    conn: psycopg.Connection[Any]
    engine: sa.Engine
    indexes: frozenset[str]
    middle: dict[str, Any]


def listing_sql(
    engine: sa.Engine, filters: service.AuditFilters, cursor: Cursor | None
) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of the page ``GET /v1/audit-events`` reads, as the app
    builds it (``app.audit.service.list_statement``), compiled for this engine."""
    page = CursorParams(limit=DEFAULT_LIMIT, cursor=cursor)
    compiled = service.list_statement(filters, page).compile(dialect=engine.dialect)
    return compiled.string, dict(compiled.params)


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Events]:
    name = f"formula_ops_plans_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        settings = Settings(
            database_url=SecretStr(url), state_dir=Path(tmp_path_factory.mktemp("plans"))
        )
        in_thread(migrate.upgrade, settings)
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            conn.execute("SELECT setseed(0.42)")
            step = dt.timedelta(days=DAYS) / ROWS
            conn.execute(INSERT_EVENTS, {"start": START, "step": step, "rows": ROWS})
            conn.execute("ANALYZE audit_event")
            indexes = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_event'"
            ).fetchall()
            middle = (
                conn.cursor(row_factory=dict_row)
                .execute(
                    "SELECT created_at, id, actor_token_id, action, resource_type, resource_id"
                    " FROM audit_event WHERE seq >= %s AND outcome = 'success'"
                    " ORDER BY seq LIMIT 1",
                    (ROWS // 2,),
                )
                .fetchone()
            )
            assert middle is not None
            yield Events(conn, engine, frozenset(i for (i,) in indexes), middle)
    finally:
        engine.dispose()
        drop_pg_database(name)


def _case(name: str, middle: dict[str, Any]) -> tuple[service.AuditFilters, Cursor | None]:
    since = START + dt.timedelta(days=DAYS // 2)
    cases: dict[str, tuple[service.AuditFilters, Cursor | None]] = {
        "first-page": (service.AuditFilters(), None),
        "actor": (service.AuditFilters(actor=middle["actor_token_id"]), None),
        "action": (service.AuditFilters(action=middle["action"]), None),
        "resource": (
            service.AuditFilters(
                resource_type=middle["resource_type"], resource_id=middle["resource_id"]
            ),
            None,
        ),
        "outcome-denied": (service.AuditFilters(outcome=Outcome.DENIED), None),
        "time-range": (
            service.AuditFilters(since=since, until=since + dt.timedelta(days=7)),
            None,
        ),
        "deep-page": (service.AuditFilters(), Cursor(middle["created_at"], middle["id"])),
    }
    return cases[name]


@pytest.mark.parametrize(
    "case",
    [
        "first-page",
        "actor",
        "action",
        "resource",
        "outcome-denied",
        "time-range",
        "deep-page",
    ],
)
def test_listing_query_uses_an_index(events: Events, case: str) -> None:
    filters, cursor = _case(case, events.middle)
    sql, params = listing_sql(events.engine, filters, cursor)
    row = events.conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    nodes = list(plan_nodes(row[0][0]["Plan"]))

    seq_scans = [
        n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "audit_event"
    ]
    used = {n["Index Name"] for n in nodes if "Index Name" in n}
    assert not seq_scans, f"sequential scan of audit_event:\n{sql}\n{row[0]}"
    assert used & events.indexes, f"no index of audit_event used:\n{sql}\n{row[0]}"
