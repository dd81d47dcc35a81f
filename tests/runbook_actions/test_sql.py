"""The ``sql`` step action against real databases: a scratch PostgreSQL database of the
test's own and a SQLite file, through runs executed by a real worker."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.core.context import AppContext
from app.core.settings import Settings
from app.runbooks.actions.sql import SqlParams
from app.runs.models import Run
from app.runs.service import StepSpec
from tests.helpers import run_worker_burst
from tests.runbook_actions.conftest import add_environment, canary_rows, create, read

# The target database is the subject; the control plane's own is PostgreSQL here.
pytestmark = pytest.mark.one_backend("postgres")

INJECTIONS = [
    "1; DROP TABLE canary --",
    "' OR 1=1 --",
    "alpha' OR '1'='1",
    "x'); DROP TABLE canary; --",
]


async def run_steps(
    context: AppContext, settings: Settings, *steps: dict[str, Any], step_timeout: float = 120
) -> Run:
    specs = [
        StepSpec(f"step {n}", "sql", params, timeout_seconds=step_timeout, stop_on_failure=False)
        for n, params in enumerate(steps)
    ]
    run_id = await create(context, specs)
    await run_worker_burst(settings)
    return await read(context, run_id)


def sql(query: str, **params: Any) -> dict[str, Any]:
    return {"environment": "db", "query": query, **params}


class TestPostgresReadOnly:
    async def test_a_write_statement_is_refused_and_nothing_is_written(
        self, context: AppContext, settings: Settings, scratch_pg: str
    ) -> None:
        await add_environment(context, "db", scratch_pg)
        run = await run_steps(
            context,
            settings,
            sql("INSERT INTO canary VALUES (3, 'gamma')"),
            sql("DELETE FROM canary RETURNING id"),
        )
        # Both steps go on after a failure: the run ends, listing them as failed.
        assert run.result is not None
        assert run.result["failed_steps"] == ["step 0", "step 1"]
        for step in run.steps:
            assert step.status == "failure"
            assert "read-only transaction" in (step.error or ""), step.error
        assert canary_rows(scratch_pg) == [(1, "alpha"), (2, "beta")]

    async def test_binds_are_data_never_sql(
        self, context: AppContext, settings: Settings, scratch_pg: str
    ) -> None:
        await add_environment(context, "db", scratch_pg)
        run = await run_steps(
            context,
            settings,
            *(
                sql("SELECT id, name FROM canary WHERE name = :name", binds={"name": payload})
                for payload in INJECTIONS
            ),
            sql(
                "SELECT count(*) AS n FROM canary WHERE name = :name OR id = :id",
                binds={"name": INJECTIONS[1], "id": 2},
            ),
        )
        assert run.status == "success", [s.error for s in run.steps]
        for step in run.steps[:-1]:
            assert step.result is not None
            assert step.result["rows"] == []
            assert step.result["row_count"] == 0
        assert run.steps[-1].result is not None
        assert run.steps[-1].result["rows"] == [[1]]  # the id matched, the payload did not
        assert canary_rows(scratch_pg) == [(1, "alpha"), (2, "beta")]

    async def test_statement_timeout_ends_a_long_statement(
        self, context: AppContext, settings: Settings, scratch_pg: str
    ) -> None:
        await add_environment(context, "db", scratch_pg)
        started = time.monotonic()
        run = await run_steps(
            context, settings, sql("SELECT pg_sleep(10)", statement_timeout_seconds=1)
        )
        assert time.monotonic() - started < 8
        step = run.steps[0]
        assert step.status == "failure"
        assert "statement timeout: it ran longer than 1 s" in (step.error or ""), step.error
        assert "57014" in (step.error or "")  # query_canceled


class TestPostgresResults:
    async def test_values_become_json_and_rows_are_bounded(
        self, context: AppContext, settings: Settings, scratch_pg: str
    ) -> None:
        await add_environment(context, "db", scratch_pg)
        run = await run_steps(
            context,
            settings,
            sql(
                "SELECT interval '90 seconds' AS duration, "
                "timestamptz '2026-01-02 03:04:05+02' AS at, 1.25::numeric AS amount, "
                "'\\xdead'::bytea AS raw, NULL::text AS nothing, '50%' AS pct"
            ),
            sql("SELECT g AS n FROM generate_series(1, 50) g", max_rows=10, warning_rows=5),
            sql("SELECT 1 WHERE false", warning_rows=1),
            sql("SELECT g FROM generate_series(1, 3) g", warning_rows=1, critical_rows=3),
            sql("SELECT g FROM generate_series(1, 50) g", max_rows=2, critical_rows=3),
        )
        values, many, none, critical, cut = run.steps
        assert values.result is not None
        assert values.result["columns"] == ["duration", "at", "amount", "raw", "nothing", "pct"]
        assert values.result["rows"] == [
            [
                90.0,
                "2026-01-02T01:04:05Z",
                1.25,
                {"hex": "dead", "length": 2, "truncated": False},
                None,
                "50%",
            ]
        ]
        assert values.level is None  # no thresholds: nothing to judge
        assert many.result is not None
        assert many.result["rows"] == [[n] for n in range(1, 11)]
        assert many.result["truncated"] is True
        assert many.level == "warning"
        assert many.status == "success"
        assert many.result["summary"] == "10+ row(s) (first 10 kept)"
        assert none.level == "ok"
        assert none.result is not None
        assert none.result["row_count"] == 0
        assert critical.level == "critical"
        assert critical.status == "failure"
        # Cut after 2 rows, the read had at least 3: critical.
        assert cut.level == "critical"
        assert cut.result is not None
        assert cut.result["truncated"] is True

    async def test_a_missing_relation_skips_the_step(
        self, context: AppContext, settings: Settings, scratch_pg: str
    ) -> None:
        await add_environment(context, "db", scratch_pg)
        run = await run_steps(
            context,
            settings,
            sql(
                "SELECT query, calls FROM pg_stat_statements ORDER BY total_exec_time DESC",
                requires_relation="pg_stat_statements",
            ),
            sql("SELECT count(*) FROM canary", requires_relation="canary"),
        )
        skipped, present = run.steps
        assert skipped.status == "success"
        assert skipped.level is None
        assert skipped.result == {
            "skipped": "pg_stat_statements is not installed",
            "summary": "pg_stat_statements is not installed",
        }
        assert present.result is not None
        assert present.result["rows"] == [[2]]

    async def test_writes_commit_and_maintenance_runs_outside_a_transaction(
        self, context: AppContext, settings: Settings, scratch_pg: str
    ) -> None:
        await add_environment(context, "db", scratch_pg)
        run = await run_steps(
            context,
            settings,
            sql(
                "INSERT INTO canary VALUES (:id, :name)",
                binds={"id": 3, "name": "g'); --"},
                write=True,
            ),
            sql(
                "UPDATE canary SET name = upper(name) WHERE id < :id RETURNING id",
                write=True,
                binds={"id": 3},
                max_rows=1,
            ),
            sql("VACUUM ANALYZE canary", write=True, autocommit=True),
            sql("VACUUM canary", write=True),  # not in a transaction: refused
        )
        insert, update, vacuum, refused = run.steps
        assert insert.result is not None
        assert insert.result["row_count"] == 1
        assert insert.result["summary"] == "1 row(s) changed"
        # A write reads its result to the end (not cancelled after max_rows).
        assert update.result is not None
        assert update.result["row_count"] == 2
        assert update.result["truncated"] is True
        assert vacuum.status == "success", vacuum.error
        assert refused.status == "failure"
        assert "cannot run inside a transaction block" in (refused.error or "")
        assert canary_rows(scratch_pg) == [(1, "ALPHA"), (2, "BETA"), (3, "g'); --")]

    async def test_one_statement_only(
        self, context: AppContext, settings: Settings, scratch_pg: str
    ) -> None:
        await add_environment(context, "db", scratch_pg)
        run = await run_steps(context, settings, sql("SELECT 1; DROP TABLE canary", write=True))
        assert run.steps[0].status == "failure"
        assert "multiple commands" in (run.steps[0].error or ""), run.steps[0].error
        assert canary_rows(scratch_pg) == [(1, "alpha"), (2, "beta")]

    async def test_errors_never_show_the_password(
        self, context: AppContext, settings: Settings, scratch_pg: str
    ) -> None:
        password = "Pa55-word-in-url"
        base, _, name = scratch_pg.rpartition("/")
        with_password = base.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
        await add_environment(context, "db", f"{with_password}/{name}")
        await add_environment(context, "gone", f"{with_password}/no_such_database_here")
        run = await run_steps(
            context,
            settings,
            sql("SELECT count(*) FROM canary"),  # trust: the password is not checked
            sql("SELECT no_such_column FROM canary"),
            {"environment": "gone", "query": "SELECT 1"},
            {"environment": "nowhere", "query": "SELECT 1"},
        )
        ok, bad_sql, no_database, no_environment = run.steps
        assert ok.status == "success"
        assert ok.result is not None
        assert ok.result["rows"] == [[2]]
        assert "no_such_column" in (bad_sql.error or "")
        assert "cannot connect to 127.0.0.1:5432/no_such_database_here" in (
            no_database.error or ""
        ), no_database.error
        assert no_environment.error == "no environment 'nowhere'"
        for step in run.steps:
            for text in (step.error or "", step.output or "", str(step.result)):
                assert password not in text


class TestParams:
    def test_binds_must_match_the_placeholders(self) -> None:
        SqlParams(environment="db", query="SELECT :a, x::int, '10:30'", binds={"a": 1})
        for query, binds, message in [
            ("SELECT :a", {}, "no bind for placeholder"),
            ("SELECT 1", {"a": 1}, "not used by the query"),
            ("SELECT 1", {"a b": 1}, "not an identifier"),
        ]:
            with pytest.raises(ValidationError, match=message):
                SqlParams(environment="db", query=query, binds=binds)

    def test_autocommit_is_for_writes_and_limits_hold(self) -> None:
        with pytest.raises(ValidationError, match="autocommit is only"):
            SqlParams(environment="db", query="VACUUM", autocommit=True)
        with pytest.raises(ValidationError, match="could never be seen"):
            SqlParams(environment="db", query="SELECT 1", max_rows=5, warning_rows=7)
        for field, value in [("max_rows", 1001), ("statement_timeout_seconds", 3601)]:
            with pytest.raises(ValidationError):
                SqlParams.model_validate({"environment": "db", "query": "SELECT 1", field: value})


def exists(path: Path) -> bool:
    return path.exists()


class TestSqlite:
    @pytest.fixture
    def database(self, tmp_path: Path) -> Path:
        path = tmp_path / "app.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE canary (id integer PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO canary VALUES (1, 'alpha'), (2, 'beta')")
        conn.commit()
        conn.close()
        return path

    def rows(self, path: Path) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(path)
        try:
            return list(conn.execute("SELECT id, name FROM canary ORDER BY id"))
        finally:
            conn.close()

    async def test_reads_are_read_only_binds_are_data_writes_commit(
        self, context: AppContext, settings: Settings, database: Path
    ) -> None:
        await add_environment(context, "db", f"sqlite:///{database}")
        run = await run_steps(
            context,
            settings,
            sql("INSERT INTO canary VALUES (3, 'gamma')"),
            sql("SELECT id FROM canary WHERE name = :name", binds={"name": INJECTIONS[0]}),
            sql("SELECT id FROM canary WHERE name = :name", binds={"name": INJECTIONS[1]}),
            sql("SELECT name FROM canary WHERE id >= :id", binds={"id": 1}, max_rows=1),
            sql("ATTACH DATABASE :path AS other", binds={"path": str(database) + "-x"}),
            sql("INSERT INTO canary VALUES (:id, :name)", binds={"id": 3, "name": "g"}, write=True),
            sql("SELECT 1 FROM missing", requires_relation="missing"),
        )
        refused, first, second, bounded, attach, insert, skipped = run.steps
        assert refused.status == "failure"
        assert "readonly database" in (refused.error or ""), refused.error
        for step in (first, second):
            assert step.status == "success"
            assert step.result is not None
            assert step.result["rows"] == []
        assert bounded.result is not None
        assert bounded.result["rows"] == [["alpha"]]
        assert bounded.result["truncated"] is True
        assert attach.status == "failure"
        assert not exists(Path(str(database) + "-x"))
        assert insert.status == "success"
        assert insert.result is not None
        assert insert.result["row_count"] == 1
        assert skipped.result is not None
        assert skipped.result["skipped"] == "missing is not installed"
        assert self.rows(database) == [(1, "alpha"), (2, "beta"), (3, "g")]

    async def test_a_long_statement_is_interrupted(
        self, context: AppContext, settings: Settings, database: Path
    ) -> None:
        await add_environment(context, "db", f"sqlite:///{database}")
        endless = (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
        )
        started = time.monotonic()
        run = await run_steps(context, settings, sql(endless, statement_timeout_seconds=1))
        assert time.monotonic() - started < 10
        assert "statement timeout" in (run.steps[0].error or ""), run.steps[0].error
