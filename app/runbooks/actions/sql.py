"""The ``sql`` step action: one statement against an environment's database.

The statement is the catalog's (admin-controlled); what a caller gives reaches it only
as bind parameters: ``:name`` placeholders (SQLAlchemy :func:`~sqlalchemy.text` rules:
``\\:`` is a literal colon, ``::`` a cast), sent to the server as parameters of the
extended protocol (PostgreSQL) or bound by SQLite — never formatted into the text.

- **Read-only by default.** PostgreSQL: a ``READ ONLY`` transaction, rolled back at the
  end; SQLite: the file opened read-only (``mode=ro``), ``ATTACH`` refused.
- **Bounded.** A ``statement_timeout`` (PostgreSQL, ``SET LOCAL`` or for ``autocommit``
  the session's); SQLite's progress handler interrupts a longer statement. At most
  ``max_rows`` rows are kept (a read stops fetching there; a write reads its result to
  the end so it is not cancelled), each text value at most :data:`MAX_CELL` characters.
  The step's own ``timeout_seconds`` should be longer than ``statement_timeout_seconds``;
  if it ends first the query is cancelled on the server (or interrupted in SQLite).
- **One statement.** PostgreSQL's extended protocol and :mod:`sqlite3` both refuse a
  text holding two.
- **Secrets.** The database URL is read from the environment's row and never shown: the
  password goes to psycopg as a keyword argument, and every error text is scrubbed of it
  and of URL userinfo (:mod:`app.core.redaction`).

``requires_relation`` names a relation (``pg_stat_statements``) the statement needs; when
it does not exist the step succeeds with no level and ``{"skipped": "... is not
installed"}``. ``warning_rows``/``critical_rows`` turn the row count into a level (a
critical level fails the step, as for every probe: :func:`app.runs.actions.level_outcome`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pydantic import Field, model_validator
from sqlalchemy import select, text
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.exc import ArgumentError

from app.backups.postgres import PgTarget
from app.backups.sources import SourceError, sqlite_path
from app.core.redaction import Scrubber
from app.core.registry import Registry
from app.environments.models import Environment
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome
from app.runs.models import Level, StepStatus

NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
BIND_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
MAX_QUERY = 20_000  # characters of a statement
MAX_CELL = 2_000  # characters of a text value kept in the result
MAX_BYTES_SHOWN = 64  # bytes of a binary value shown (as hex)
CONNECT_TIMEOUT = 10  # s
APPLICATION_NAME = "formula-ops-runbook"

BindValue = str | int | float | bool | None
_PG_DIALECT = psycopg_dialect.dialect()  # type: ignore[no-untyped-call]
_SQLITE_DIALECT = sqlite_dialect.dialect(paramstyle="named")


class SqlParams(Params):
    environment: str = Field(pattern=NAME, description="The environment whose database it is.")
    query: str = Field(min_length=1, max_length=MAX_QUERY, description="One SQL statement.")
    binds: dict[str, BindValue] = Field(
        default_factory=dict, description="Values of the `:name` placeholders."
    )
    write: bool = False
    autocommit: bool = Field(
        default=False,
        description="Outside a transaction (VACUUM, ANALYZE, CREATE INDEX CONCURRENTLY); "
        "only with `write`.",
    )
    statement_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    max_rows: int = Field(default=100, ge=0, le=1000)
    requires_relation: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z_][A-Za-z0-9_$.]*$",
        description="Skip the step when this table or view does not exist.",
    )
    warning_rows: int | None = Field(default=None, ge=1)
    critical_rows: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> SqlParams:
        if self.autocommit and not self.write:
            raise ValueError("autocommit is only for a statement with write: true")
        for name in self.binds:
            if not _is_bind_name(name):
                raise ValueError(f"bind name {name!r} is not an identifier")
        wanted = placeholders(self.query)
        missing = sorted(wanted - set(self.binds))
        unused = sorted(set(self.binds) - wanted)
        if missing:
            raise ValueError(f"no bind for placeholder(s) {', '.join(':' + n for n in missing)}")
        if unused:
            raise ValueError(f"bind(s) {', '.join(unused)} not used by the query")
        if (
            self.warning_rows is not None
            and self.critical_rows is not None
            and self.critical_rows < self.warning_rows
        ):
            raise ValueError("critical_rows is below warning_rows")
        for name in ("warning_rows", "critical_rows"):
            limit = getattr(self, name)
            if limit is not None and limit > self.max_rows + 1:
                raise ValueError(f"{name} is more than max_rows + 1: it could never be seen")
        return self


def _is_bind_name(name: str) -> bool:
    return re.match(BIND_NAME, name) is not None


def placeholders(query: str) -> set[str]:
    """The names of the ``:name`` placeholders of ``query``."""
    try:
        return set(text(query).compile().params)
    except ArgumentError as exc:
        raise ValueError(f"query: {exc}") from None


class SqlFailure(Exception):
    """The statement could not run (the text is safe to show)."""


@dataclass
class Result:
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    row_count: int = 0  # rows returned (kept or not), or rows changed without a result
    truncated: bool = False
    returned_rows: bool = True
    skipped: str | None = None


# -- JSON-safe values ---------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """A value of a row as JSON: intervals in seconds, timestamps RFC 3339 (UTC when
    the value knows its zone), decimals as numbers, bytes as hex (long ones cut, with
    their length), long text cut at :data:`MAX_CELL` characters."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_CELL else value[:MAX_CELL] + "…"
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        shown = raw[:MAX_BYTES_SHOWN].hex()
        return {"hex": shown, "length": len(raw), "truncated": len(raw) > MAX_BYTES_SHOWN}
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return json_safe(str(value))


# -- PostgreSQL ---------------------------------------------------------------------------


class _Postgres:
    def __init__(self, url: str) -> None:
        try:
            self.target = PgTarget.from_url(url)
        except SourceError as exc:
            raise SqlFailure(str(exc)) from None
        password = self.target.password
        self.scrubber = Scrubber([password] if password else [])

    def error(self, message: str, cause: BaseException | None = None) -> SqlFailure:
        detail = str(cause).strip() if cause is not None else ""
        if isinstance(cause, psycopg.Error) and cause.sqlstate:
            detail = f"{detail} (SQLSTATE {cause.sqlstate})"
        text_ = f"{message}: {detail}" if detail else message
        password = self.target.password
        if password:  # in a URL also when shorter than the scrubber's minimum
            text_ = text_.replace(f":{password}@", ":[redacted]@")
        return SqlFailure(self.scrubber.text(text_))

    async def connect(self, *, autocommit: bool) -> psycopg.AsyncConnection[Any]:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT + 1):
                return await psycopg.AsyncConnection.connect(
                    autocommit=autocommit,
                    connect_timeout=CONNECT_TIMEOUT,
                    application_name=APPLICATION_NAME,
                    **self.target.connect_kwargs(),
                )
        except (psycopg.Error, TimeoutError) as exc:
            raise self.error(f"cannot connect to {self.target.display()}", exc) from None

    async def run(self, params: SqlParams) -> Result:
        compiled = text(params.query).compile(dialect=_PG_DIALECT)
        statement, binds = compiled.string, {**compiled.params, **params.binds}
        conn = await self.connect(autocommit=params.autocommit)
        timeout_ms = f"{round(params.statement_timeout_seconds * 1000)}ms"
        try:
            try:
                if params.autocommit:
                    await conn.execute(
                        "SELECT set_config('statement_timeout', %s, false)", [timeout_ms]
                    )
                else:
                    if not params.write:
                        await conn.execute("SET TRANSACTION READ ONLY")
                    await conn.execute(
                        "SELECT set_config('statement_timeout', %s, true)", [timeout_ms]
                    )
                if params.requires_relation is not None and not await self._exists(
                    conn, params.requires_relation
                ):
                    return Result(skipped=f"{params.requires_relation} is not installed")
                result = await self._stream(conn, statement, binds, params)
                if params.write and not params.autocommit:
                    await conn.commit()
                return result
            except psycopg.errors.QueryCanceled as exc:
                raise self.error(
                    f"statement timeout: it ran longer than {params.statement_timeout_seconds:g} s",
                    exc,
                ) from None
            except psycopg.Error as exc:
                raise self.error("the statement failed", exc) from None
        except asyncio.CancelledError:
            # The step's own timeout: end the statement on the server too.
            await asyncio.shield(_cancel(conn))
            raise
        finally:
            await asyncio.shield(_close(conn))

    async def _exists(self, conn: psycopg.AsyncConnection[Any], relation: str) -> bool:
        row = await (
            await conn.execute("SELECT to_regclass(%s) IS NOT NULL", [relation])
        ).fetchone()
        return bool(row and row[0])

    async def _stream(
        self,
        conn: psycopg.AsyncConnection[Any],
        statement: str,
        binds: dict[str, Any],
        params: SqlParams,
    ) -> Result:
        """Both ways use the extended protocol, which takes one statement only. A read
        streams its rows and stops after ``max_rows`` (the rest is cancelled); a write is
        prepared and executed whole (its rows are counted, the first ``max_rows`` kept)."""
        result = Result()
        async with conn.cursor() as cursor:
            if params.write:
                await cursor.execute(statement, binds, prepare=True)
                if cursor.description is None:
                    result.returned_rows = False
                    result.row_count = max(cursor.rowcount, 0)
                    return result
                result.columns = [c.name for c in cursor.description]
                result.rows = (
                    [[json_safe(v) for v in row] for row in await cursor.fetchmany(params.max_rows)]
                    if params.max_rows
                    else []
                )
                result.row_count = max(cursor.rowcount, len(result.rows))
                result.truncated = result.row_count > len(result.rows)
                return result
            try:
                async for row in cursor.stream(statement, binds):
                    if len(result.rows) >= params.max_rows:
                        result.truncated = True
                        break  # the rest is cancelled
                    result.rows.append([json_safe(v) for v in row])
            except psycopg.ProgrammingError as exc:
                if cursor.description is None and "didn't produce a result" in str(exc):
                    raise SqlFailure("a read statement must return rows (a query)") from None
                raise
            if cursor.description is not None:
                result.columns = [c.name for c in cursor.description]
            result.row_count = len(result.rows)
        return result


async def _cancel(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.cancel_safe(timeout=5)


async def _close(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


# -- SQLite -------------------------------------------------------------------------------


def _no_attach(action: int, *_: object) -> int:
    """A read-only connection may not ``ATTACH`` (which creates a file)."""
    import sqlite3

    return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_ATTACH else sqlite3.SQLITE_OK


def _sqlite_run(path: Path, params: SqlParams, statement: str, cancel: list[Any]) -> Result:
    import sqlite3  # here, not with the module: a PostgreSQL deployment never loads it

    if params.write:
        if not path.exists():
            raise SqlFailure(f"no SQLite database at {path}")
        conn = sqlite3.connect(path, isolation_level=None, timeout=params.statement_timeout_seconds)
    else:
        try:
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise SqlFailure(f"cannot open {path} read-only: {exc}") from None
        conn.set_authorizer(_no_attach)
    cancel.append(conn)
    deadline = time.monotonic() + params.statement_timeout_seconds
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    result = Result()
    try:
        if params.requires_relation is not None:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
                [params.requires_relation],
            ).fetchone()
            if found is None:
                return Result(skipped=f"{params.requires_relation} is not installed")
        transaction = params.write and not params.autocommit
        if transaction:
            conn.execute("BEGIN IMMEDIATE")
        cursor = conn.execute(statement, params.binds)
        if cursor.description is None:
            result.returned_rows = False
            result.row_count = max(cursor.rowcount, 0)
        else:
            result.columns = [str(c[0]) for c in cursor.description]
            for row in cursor:
                result.row_count += 1
                if len(result.rows) < params.max_rows:
                    result.rows.append([json_safe(v) for v in row])
                else:
                    result.truncated = True
                    if not params.write:
                        result.row_count = len(result.rows)
                        break
        cursor.close()
        if transaction:
            conn.execute("COMMIT")
        return result
    except sqlite3.Error as exc:
        if time.monotonic() > deadline:
            raise SqlFailure(
                f"statement timeout: it ran longer than {params.statement_timeout_seconds:g} s"
            ) from None
        raise SqlFailure(f"the statement failed: {exc}") from None
    finally:
        conn.close()


async def _sqlite(url: str, params: SqlParams) -> Result:
    try:
        path = sqlite_path(url)
    except SourceError as exc:
        raise SqlFailure(str(exc)) from None
    import sqlite3

    statement = text(params.query).compile(dialect=_SQLITE_DIALECT)
    opened: list[sqlite3.Connection] = []
    try:
        return await asyncio.to_thread(_sqlite_run, path, params, statement.string, opened)
    except asyncio.CancelledError:
        for conn in opened:  # the step's own timeout: stop the statement in its thread
            with contextlib.suppress(sqlite3.Error):
                conn.interrupt()
        raise


# -- the action ---------------------------------------------------------------------------


async def _database_url(ctx: StepContext, environment: str) -> str:
    async with ctx.context.sessionmaker() as session:
        row = (
            await session.execute(
                select(Environment.name, Environment.database_url).where(
                    Environment.name == environment
                )
            )
        ).first()
    if row is None:
        raise SqlFailure(f"no environment {environment!r}")
    if not row.database_url:
        raise SqlFailure(f"environment {environment!r} has no database_url")
    return str(row.database_url)


def _level(params: SqlParams, rows: int) -> Level | None:
    if params.warning_rows is None and params.critical_rows is None:
        return None
    if params.critical_rows is not None and rows >= params.critical_rows:
        return Level.CRITICAL
    if params.warning_rows is not None and rows >= params.warning_rows:
        return Level.WARNING
    return Level.OK


def _summary(params: SqlParams, result: Result) -> str:
    if not result.returned_rows:
        return f"{result.row_count} row(s) changed"
    more = f" (first {params.max_rows} kept)" if result.truncated else ""
    return f"{result.row_count}{'+' if result.truncated else ''} row(s){more}"


def _output(result: Result) -> str:
    if not result.returned_rows or not result.columns:
        return ""
    lines = ["\t".join(result.columns)]
    lines += ["\t".join("" if v is None else str(v) for v in row) for row in result.rows[:50]]
    if len(result.rows) > 50:
        lines.append(f"… {len(result.rows) - 50} more row(s) in the result")
    return "\n".join(lines)


async def sql(params: SqlParams, ctx: StepContext) -> StepOutcome:
    try:
        url = await _database_url(ctx, params.environment)
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        if scheme in ("postgresql", "postgres"):
            result = await _Postgres(url).run(params)
        elif scheme == "sqlite":
            result = await _sqlite(url, params)
        else:
            raise SqlFailure("the database URL is neither postgresql:// nor sqlite:///")
    except SqlFailure as exc:
        return StepOutcome(StepStatus.FAILURE, error=str(exc)[:2000])
    if result.skipped is not None:
        return StepOutcome(
            StepStatus.SUCCESS,
            result.skipped,
            None,
            {"skipped": result.skipped, "summary": result.skipped},
        )
    summary = _summary(params, result)
    data = {
        "columns": result.columns,
        "rows": result.rows,
        "row_count": result.row_count,
        "truncated": result.truncated,
        "summary": summary,
    }
    # A read cut at max_rows had at least one row more.
    level = _level(params, result.row_count + (1 if result.truncated and not params.write else 0))
    status = StepStatus.FAILURE if level == Level.CRITICAL else StepStatus.SUCCESS
    output = _output(result)
    return StepOutcome(
        status,
        f"{summary}\n{output}".rstrip(),
        level,
        data,
        error=f"{summary}: at least {params.critical_rows} is critical"
        if status == StepStatus.FAILURE
        else None,
    )


def register(registry: Registry) -> None:
    # Idempotent as an action: a read may run again. A step with write: true is declared
    # not idempotent by the catalog.
    registry[ACTIONS].add("sql", Action(SqlParams, sql, idempotent=True))
