"""What is backed up: a database, dumped as a stream and restored into a scratch
database (a drill) or over its target (a restore).

A :class:`Source` is built from a connection URL (:func:`app.backups.targets.source_for`):
``postgresql://user:password@host:port/name`` (:mod:`app.backups.postgres`: ``pg_dump``
and ``pg_restore``/``psql``, the password only in the child's environment) or
``sqlite:////abs/path.db`` (:mod:`app.backups.sqlite`: the online backup API).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

LogLine = Callable[[str], Awaitable[None]]


class SourceError(Exception):
    """A dump or restore failed (the message is redacted and safe to show)."""


@dataclass
class Dump:
    """A dump under way: exact row counts of the largest tables (taken from the same
    snapshot as the dump), and the dump's bytes. ``finished`` raises
    :class:`SourceError` when the dump did not complete (call it after ``chunks``)."""

    row_counts: dict[str, int]
    chunks: AsyncIterator[bytes]
    finished: Callable[[], Awaitable[None]]


class Scratch(Protocol):
    """A new database that a backup is loaded into; dropped when its context ends
    unless :meth:`promote` made it the target."""

    name: str

    async def load(self, chunks: AsyncIterable[bytes]) -> None:
        """Restore the dump's bytes (as dumped, uncompressed) into it."""

    async def row_counts(self, tables: list[str]) -> dict[str, int]:
        """Exact row counts; a missing table counts -1."""
        ...

    async def query(self, sql: str) -> int:
        """Run one read-only query (a smoke query); returns its row count."""
        ...

    async def promote(self) -> None:
        """Make this database the target (the target's old contents are discarded)."""


class Source(Protocol):
    engine: str  # postgresql | sqlite
    database: str  # the database's name (what a restore's ``confirm`` must equal)
    format: str  # custom | plain | sqlite
    extension: str  # of the stored object: .dump | .sql.gz | .db.gz
    compress: bool  # gzip the dump's bytes before storing (custom is compressed already)

    def dump(self, log: LogLine) -> AbstractAsyncContextManager[Dump]: ...

    def scratch(self, log: LogLine) -> AbstractAsyncContextManager[Scratch]:
        """A new, empty database beside the target (same server, same folder)."""
        ...

    async def ping(self) -> None:
        """Raise :class:`SourceError` when the database cannot be reached."""


def sqlite_path(url: str) -> Path:
    """``sqlite:////abs/path.db`` (SQLAlchemy's form, also ``sqlite+aiosqlite://``) →
    the file's path. Here, not in :mod:`app.backups.sqlite`, so that naming the file
    does not import sqlite3."""
    parts = urlsplit(url)
    path = Path(unquote(url.split(":///", 1)[1])) if ":///" in url else None
    if parts.netloc or path is None or not path.is_absolute() or path.name in ("", ":memory:"):
        raise SourceError("a SQLite database URL is sqlite:////absolute/path.db")
    return path
