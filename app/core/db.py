"""Database foundations: declarative base, column types, engine factory, unit of work."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, event, insert
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
    work (they stay outside the session: data for the answer, nothing to flush or reload)."""
    if not objects:
        return
    table: Any = type(objects[0]).__table__
    # The table's INSERT with the rows as parameters: compiled once and cached, sent as one
    # multi-row INSERT (SQLAlchemy's "insertmanyvalues"), and no ORM bulk layer in between.
    await session.execute(insert(table), [row_values(o) for o in objects])


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


class UnitOfWork:
    """One transaction: ``async with uow:`` begins, commits on success, rolls back on error.

    Work that must only happen once the transaction is durable (enqueueing arq jobs)
    is registered with :meth:`after_commit` and run after the commit; a rollback drops
    it. A failure of such a callback is logged, never raised: the database row is
    already the source of truth and the reconciler repairs a missed enqueue.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
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
        session = self._session = self._sessionmaker()
        self._after_commit = []
        try:
            await session.begin()
        except BaseException:
            # Cancelled (or failed) while beginning: the BEGIN may have reached the
            # database. Close the session (rolling back, returning its connection), or
            # the transaction would hold its locks until garbage collection.
            self._session = None
            closing = asyncio.ensure_future(session.close())
            closing.add_done_callback(_consume)
            await asyncio.shield(closing)
            raise
        return self

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
