"""Database foundations: declarative base, column types, engine factory, unit of work."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    MetaData,
    Text,
    bindparam,
    cast,
    column,
    event,
    func,
    insert,
    select,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from app.core.settings import Settings
from app.core.state_dir import private_file, secure_state_dir

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC, on PostgreSQL and on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware values")
        value = value.astimezone(dt.UTC)
        # SQLite stores text: drop the offset so every row compares as the same format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON()}


def create_engine(settings: Settings) -> AsyncEngine:
    """The engine for the configured database, with the SQLite pragmas the design asks for.

    ``hide_parameters``: a failing statement is logged and raised without its parameter
    values (they may be secrets: environment values of a service, token hashes…)."""
    url = settings.database_url_value
    if url.startswith("sqlite"):
        prepare_sqlite_file(settings)
        # pooled: a connection's PRAGMAs run once
        engine = create_async_engine(url, hide_parameters=True)
        _configure_sqlite(engine)
        return engine
    if settings.state_dir.is_dir():  # the process driver's records and service logs
        secure_state_dir(settings.state_dir)
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True
    )


def prepare_sqlite_file(settings: Settings) -> None:
    """The state directory (0700) and the SQLite file (0600; SQLite gives its ``-wal``
    and ``-shm`` files the database file's mode) exist before SQLite opens them."""
    secure_state_dir(settings.state_dir)
    database = make_url(settings.database_url_value).database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        if path.parent.is_dir():
            private_file(path)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Write transactions take the lock up front (BEGIN IMMEDIATE) so two writers
        # never deadlock on a lock upgrade; reads stay deferred.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def row_values(obj: Base) -> dict[str, Any]:
    """Every column value of a new (never added) mapped object, for a Core INSERT; a
    column the object leaves unset gets its Python-side default, set on the object too,
    so the object then reads as the row written."""
    values: dict[str, Any] = {}
    state = obj.__dict__
    for attr in sa_inspect(type(obj)).column_attrs:
        column = attr.columns[0]
        if attr.key not in state and column.default is not None and column.default.is_scalar:
            setattr(obj, attr.key, column.default.arg)
        elif attr.key not in state and column.default is not None and column.default.is_callable:
            setattr(obj, attr.key, column.default.arg(None))
        values[attr.key] = state.get(attr.key)
    return values


async def insert_rows(session: AsyncSession, objects: Sequence[Base]) -> None:
    """Write new objects of one model in one multi-row INSERT, without the ORM's unit of
    work (they stay outside the session: data for the answer, nothing to flush or reload).
    Inside :func:`write_batch` the rows are written at the end of its block instead."""
    if not objects:
        return
    table: Any = type(objects[0]).__table__
    rows = [row_values(o) for o in objects]
    pending: list[tuple[Any, list[dict[str, Any]]]] | None = session.info.get(_BATCH)
    if pending is not None:
        pending.append((table, rows))
        return
    # The table's INSERT with the rows as parameters: compiled once and cached, sent as one
    # multi-row INSERT (SQLAlchemy's "insertmanyvalues"), and no ORM bulk layer in between.
    await session.execute(insert(table), rows)


_BATCH = "formula_ops_write_batch"


@asynccontextmanager
async def write_batch(session: AsyncSession) -> AsyncIterator[None]:
    """Rows given to :func:`insert_rows` inside the block are written when it ends without
    an error, in the order given: on PostgreSQL in one statement, each table's INSERT a
    data-modifying CTE of the last one (one round trip instead of one per table; foreign
    keys are checked at the end of the statement, so a parent and its children may be in
    one batch), elsewhere one INSERT per table as outside a batch. Nothing in the block
    may read those rows back before it ends."""
    if _BATCH in session.info:
        raise RuntimeError("write batches cannot be nested")
    pending: list[tuple[Any, list[dict[str, Any]]]] = []
    session.info[_BATCH] = pending
    try:
        yield
    finally:
        del session.info[_BATCH]
    if not pending:
        return
    if session.get_bind().dialect.name != "postgresql" or len(pending) == 1:
        for table, rows in pending:
            await session.execute(insert(table), rows)
        return
    shape = tuple((table, tuple(rows[0])) for table, rows in pending)
    dialect = session.get_bind().dialect
    parameters = {
        f"b{number}": _rows_json(table, rows, dialect)
        for number, (table, rows) in enumerate(pending)
    }
    await session.execute(_batch_statement(shape), parameters)


_BatchShape = tuple[tuple[Any, tuple[str, ...]], ...]
_BATCH_STATEMENTS: dict[_BatchShape, Any] = {}


def _batch_statement(shape: _BatchShape) -> Any:
    """The one statement of a batch of this shape (tables in order and their columns),
    built once: each table's rows as ``INSERT … SELECT … FROM json_to_recordset(:b<n>)``,
    the rows one JSON parameter per table (:func:`_rows_json`). Its text is the same
    whatever the number of rows (SQLAlchemy compiles it once), and it has a handful of
    parameters: psycopg converts a statement's placeholders on every execution when it
    has more than 50, and a batch of one parameter per value cost about 1 ms of CPU per
    request there (the profile of ``bench/deployment_create.py``). JSON columns travel as
    their JSON text, cast back to ``json``, so that a stored document keeps its key order
    and a ``None`` stays JSON ``null`` as outside a batch."""
    statement = _BATCH_STATEMENTS.get(shape)
    if statement is not None:
        return statement
    inserts = []
    for number, (table, keys) in enumerate(shape):
        columns = [table.c[key] for key in keys]
        record = (
            func.json_to_recordset(cast(bindparam(f"b{number}", type_=Text()), JSON))
            .table_valued(*(column(c.name, Text() if _is_json(c) else c.type) for c in columns))
            .render_derived(name=f"r{number}", with_types=True)
        )
        values = [
            cast(record.c[c.name], c.type) if _is_json(c) else record.c[c.name] for c in columns
        ]
        inserts.append(insert(table).from_select(columns, select(*values)))
    *before, statement = inserts
    for number, earlier in enumerate(before):
        statement = statement.add_cte(earlier.cte(f"batch_{number}"))
    if len(_BATCH_STATEMENTS) < 256:  # a handful of shapes in practice
        _BATCH_STATEMENTS[shape] = statement
    return statement


def _is_json(column: Any) -> bool:
    """Whether a column travels as its JSON text in a batch (:func:`_row_plan` encodes
    it, :func:`_batch_statement` casts it back): one rule for both."""
    return isinstance(column.type, JSON)


def _rows_json(table: Any, rows: list[dict[str, Any]], dialect: Dialect) -> str:
    """The rows of one table as the JSON array :func:`_batch_statement` reads, each value
    in the text form PostgreSQL reads for its column's type: a value the column's type
    changes first (a timestamp made UTC) changed as it would bind it, a JSON column's value
    as its JSON text, a timestamp in ISO 8601, bytes in PostgreSQL's hex form."""
    names, converters = _row_plan(table, tuple(rows[0]), dialect)
    if converters or names:
        rows = [
            {
                names.get(key, key): converters[key](value) if key in converters else value
                for key, value in row.items()
            }
            for row in rows
        ]
    return json.dumps(rows, separators=(",", ":"), default=_json_default)


_RowPlan = tuple[dict[str, str], dict[str, Callable[[Any], Any]]]
_ROW_PLANS: dict[tuple[Any, tuple[str, ...]], _RowPlan] = {}


def _row_plan(table: Any, keys: tuple[str, ...], dialect: Dialect) -> _RowPlan:
    """For a table's rows: the keys whose column has another name, and the columns whose
    values are changed before they are encoded (JSON ones, and types of their own)."""
    plan = _ROW_PLANS.get((table, keys))
    if plan is None:
        names = {key: table.c[key].name for key in keys if table.c[key].name != key}
        converters: dict[str, Callable[[Any], Any]] = {}
        for key in keys:
            column_type = table.c[key].type
            if _is_json(table.c[key]):  # JSON null for None, as the JSON type binds
                converters[key] = json.dumps
            elif isinstance(column_type, TypeDecorator):
                converters[key] = functools.partial(
                    _bind_param, column_type.process_bind_param, dialect
                )
        plan = _ROW_PLANS[(table, keys)] = (names, converters)
    return plan


def _bind_param(bind: Callable[[Any, Dialect], Any], dialect: Dialect, value: Any) -> Any:
    return bind(value, dialect)


def _json_default(value: Any) -> Any:
    """A value JSON has no type for: a timestamp (timezone-aware) or a date in ISO 8601,
    bytes in PostgreSQL's hex form, an enum member as its value, anything else (UUID,
    Decimal…) as its text."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        raise ValueError("naive datetimes are not stored; use UTC-aware values")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    return str(value)


def write_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, for transactions that write (BEGIN IMMEDIATE on SQLite)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


AfterCommit = Callable[[], Awaitable[None]]


async def _end(session: AsyncSession, *, commit: bool) -> None:
    try:
        if commit:
            await session.commit()
        else:
            await session.rollback()
    finally:
        await session.close()


def _consume(task: asyncio.Future[None]) -> None:
    """Mark the ending's error as seen: its caller got it, or stopped waiting (then the
    rollback it stands for is what the database does anyway)."""
    if not task.cancelled():
        task.exception()


async def _close_shielded(session: AsyncSession) -> None:
    """Close ``session`` (rolling back what it began, returning its connection) even when
    the caller is cancelled meanwhile, so no transaction is left holding its locks."""
    closing = asyncio.ensure_future(session.close())
    closing.add_done_callback(_consume)
    await asyncio.shield(closing)


class SharedTransaction:
    """The one transaction of a request that opts in (``SharedUnitOfWorkDep``): the token
    read of authentication, the ``Idempotency-Key`` check and the change itself run on one
    pooled connection, checked out (and pinged) once, in one transaction, instead of a
    read-only session each (checkout, ping, BEGIN, ROLLBACK) before the change's own.

    Begun on first use. A :class:`UnitOfWork` given it takes the open transaction over and
    commits or rolls it back; :meth:`close` rolls back whatever was not taken over (a
    refused request). Only on PostgreSQL (see :func:`app.core.deps.get_shared_transaction`):
    on SQLite a write transaction holds the database's write lock from its BEGIN."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None
        self._after_close: list[AfterCommit] = []

    def after_close(self, callback: AfterCommit) -> None:
        """Run ``callback`` in :meth:`close`, once this request holds no connection: work
        that needs a connection of its own (recording a token's use) would otherwise take
        a second one while the first is held, and a full pool would leave every request
        waiting for a second connection that none gives back."""
        self._after_close.append(callback)

    async def session(self) -> AsyncSession:
        """The open transaction's session, begun on first use."""
        if self._session is None:
            session = self._sessionmaker()
            try:
                await session.begin()
            except BaseException:
                await _close_shielded(session)
                raise
            self._session = session
        return self._session

    def take(self) -> AsyncSession | None:
        """Hand the open transaction over (None when none was begun): the taker ends it."""
        session, self._session = self._session, None
        return session

    async def close(self) -> None:
        """Roll back and return the connection, unless the transaction was taken over
        (whoever took it has ended it by now), then run the :meth:`after_close` callbacks
        (a failure is logged, never raised)."""
        session = self.take()
        try:
            if session is not None:
                await _close_shielded(session)
        finally:  # even when the rollback failed (the database gone)
            callbacks, self._after_close = self._after_close, []
            for callback in callbacks:
                try:
                    await callback()
                except Exception:
                    logger.exception("an action after the request's transaction failed")


class UnitOfWork:
    """One transaction: ``async with uow:`` begins, commits on success, rolls back on error.

    Work that must only happen once the transaction is durable (enqueueing arq jobs)
    is registered with :meth:`after_commit` and run after the commit; a rollback drops
    it. A failure of such a callback is logged, never raised: the database row is
    already the source of truth and the reconciler repairs a missed enqueue.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        shared: SharedTransaction | None = None,
        read_sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._read_sessionmaker = read_sessionmaker or sessionmaker
        # The request's transaction, already begun by its authentication: the first
        # `async with` continues it instead of beginning one of its own.
        self._shared = shared
        self._session: AsyncSession | None = None
        self._after_commit: list[AfterCommit] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is not open; use `async with uow:`")
        return self._session

    def after_commit(self, callback: AfterCommit) -> None:
        if self._session is None:
            raise RuntimeError("after_commit() is only valid inside `async with uow:`")
        self._after_commit.append(callback)

    async def __aenter__(self) -> UnitOfWork:
        if self._session is not None:
            raise RuntimeError("a unit of work cannot be nested")
        self._after_commit = []
        shared = self._shared.take() if self._shared is not None else None
        if shared is not None:
            self._session = shared
            return self
        session = self._session = self._sessionmaker()
        try:
            await session.begin()
        except BaseException:
            # Cancelled (or failed) while beginning: the BEGIN may have reached the
            # database. Close the session (rolling back, returning its connection), or
            # the transaction would hold its locks until garbage collection.
            self._session = None
            await _close_shielded(session)
            raise
        return self

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads that change nothing (a dry run): the request's shared
        transaction when it has one, else a read-only session of its own; rolled back
        and closed at the end of the block."""
        session = self._shared.take() if self._shared is not None else None
        if session is None:
            session = self._read_sessionmaker()
        try:
            yield session
        finally:
            await _close_shielded(session)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, callbacks = self.session, self._after_commit
        self._session, self._after_commit = None, []
        ending = asyncio.ensure_future(_end(session, commit=exc_type is None))
        ending.add_done_callback(_consume)
        # Shielded: a cancellation landing while the transaction ends (a worker stopping)
        # must not leave it open on a connection nobody returns, holding its locks (on
        # SQLite, the database's write lock) until garbage collection.
        await asyncio.shield(ending)
        if exc_type is not None:
            return
        for callback in callbacks:
            try:
                await callback()
            except Exception:
                logger.exception("after-commit action failed; the reconciler will retry it")
