"""Acceptance: the catalog's database runbooks against this machine's real PostgreSQL,
started through the API as an operator would: the long-running-query playbook ends a
real long query only after an approval, and the monthly performance review reports
table statistics, missing-index hints and runs VACUUM ANALYZE.

The target is a scratch database of the test's own (its queries are the only ones the
playbook may end); the control plane runs on one backend: what is checked is the target.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from app.auth.roles import Role
from app.core.context import AppContext
from tests.factories import issue_token
from tests.runbook_actions.conftest import add_environment
from tests.runbook_actions.test_approvals import LONG_QUERY, awaiting, finished, still_running

pytestmark = [pytest.mark.one_backend("postgres"), pytest.mark.usefixtures("worker")]


async def test_the_long_running_query_playbook_ends_it_after_approval(
    client: httpx.AsyncClient, context: AppContext, scratch_pg: str, long_query: Any
) -> None:
    await add_environment(context, "shop", scratch_pg)
    requester = await issue_token(context, Role.ADMIN)
    approver = await issue_token(context, Role.ADMIN)
    started = await client.post(
        "/v1/runbooks/db-long-running-queries/runs",
        json={
            "parameters": {
                "environment": "shop",
                "older_than_seconds": 1,
                "terminate": True,
                "terminate_after_seconds": 1,
            }
        },
        headers=requester.headers,
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    waiting = await awaiting(client, run_id, requester)
    listed = {s["name"]: s for s in waiting["steps"]}["queries running longer than the limit"]
    assert listed["level"] == "warning"
    assert any(LONG_QUERY in str(row) for row in listed["result"]["rows"]), listed["result"]
    assert still_running(scratch_pg)  # nothing ended before the answer
    answer = await client.post(
        f"/v1/runs/{run_id}/approve",
        json={"reason": "reporting job stuck"},
        headers=approver.headers,
    )
    assert answer.status_code == 200, answer.text
    done = await finished(client, run_id, requester)
    assert done["status"] == "success", done
    ended = {s["name"]: s for s in done["steps"]}["end the longest queries"]
    assert ended["result"]["rows"], ended
    assert all(row["terminated"] is True for row in _rows(ended["result"]))
    with pytest.raises(psycopg.errors.AdminShutdown):
        await long_query
    assert not still_running(scratch_pg)
    assert done["runbook"]["name"] == "db-long-running-queries"


def _rows(result: dict[str, Any]) -> list[Any]:
    columns = result.get("columns") or []
    return [
        dict(zip(columns, row, strict=False)) if isinstance(row, list) else row
        for row in result["rows"]
    ]


async def test_without_terminate_it_only_lists(
    client: httpx.AsyncClient, context: AppContext, scratch_pg: str, long_query: Any
) -> None:
    await add_environment(context, "shop", scratch_pg)
    admin = await issue_token(context, Role.ADMIN)
    response = await client.post(
        "/v1/runbooks/db-long-running-queries/runs",
        json={"parameters": {"environment": "shop", "older_than_seconds": 1}},
        headers={**admin.headers, "Prefer": "wait=60"},
    )
    assert response.status_code == 201, response.text
    assert [s["name"] for s in response.json()["steps"]] == [
        "active connections",
        "queries running longer than the limit",
    ]
    assert still_running(scratch_pg)


async def test_the_monthly_performance_review(
    client: httpx.AsyncClient, context: AppContext, scratch_pg: str
) -> None:
    with psycopg.connect(scratch_pg, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer int, note text)")
        conn.execute(
            "INSERT INTO orders (customer, note)"
            " SELECT g % 500, 'n' || g FROM generate_series(1, 5000) g"
        )
        for _ in range(3):  # sequential scans, no index on customer
            conn.execute("SELECT count(*) FROM orders WHERE customer = 7").fetchone()
    await add_environment(context, "shop", scratch_pg)
    admin = await issue_token(context, Role.ADMIN)
    response = await client.post(
        "/v1/runbooks/monthly-performance-review/runs",
        json={"parameters": {"environment": "shop", "probe": False}},
        headers={**admin.headers, "Prefer": "wait=120"},
    )
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "success", run
    steps = {s["name"]: s for s in run["steps"]}
    for name in ("table statistics", "missing-index hints", "VACUUM ANALYZE"):
        assert steps[name]["status"] == "success", steps[name]
    tables = _rows(steps["table statistics"]["result"])
    assert any(row["table"] == "orders" for row in tables), tables
    hints = _rows(steps["missing-index hints"]["result"])
    assert [row["table"] for row in hints] == ["orders"]
    assert steps["missing-index hints"]["level"] == "warning"
    slow = steps["slowest queries"]
    assert slow["status"] == "success"
    assert "skipped" in slow["result"] or slow["result"]["rows"] is not None
    assert "load probe of the health endpoint" not in steps
    assert "summary" in run["result"]
    with psycopg.connect(scratch_pg) as conn:
        analyzed = conn.execute(
            "SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL"
            " FROM pg_stat_user_tables WHERE relname = 'orders'"
        ).fetchone()
    assert analyzed == (True,)
    operator = await issue_token(context, Role.OPERATOR)
    refused = await client.post(
        "/v1/runbooks/monthly-performance-review/runs",
        json={"parameters": {"environment": "shop"}},
        headers=operator.headers,
    )
    assert refused.status_code == 403  # it writes (VACUUM): admins only
