"""SQLite databases: dumped through the online backup API (a consistent copy while
writers go on), stored as the gzipped database file, restored by copying pages back
through the same API (safe under WAL and open connections)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from app.backups.sources import Dump, LogLine, SourceError, sqlite_path
from app.core.ids import new_id

CHUNK = 1 << 20
QUERY_TIMEOUT_SECONDS = 60  # a smoke query's limit (PostgreSQL's statement_timeout too)
# What a smoke query may do: read tables and call (built-in) functions.
_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


def _reads_only(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def _readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    )
    return [str(row[0]) for row in rows]


def _count(conn: sqlite3.Connection, table: str) -> int:
    quoted = '"' + table.replace('"', '""') + '"'
    return int(conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0])  # noqa: S608


def _largest(conn: sqlite3.Connection, limit: int) -> dict[str, int]:
    counts = {table: _count(conn, table) for table in _tables(conn)}
    largest = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return dict(sorted(largest))


def _copy(source: Path, target: Path) -> None:
    """Copy ``source`` into ``target`` page by page (the online backup API)."""
    src = _readonly(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=1024)
        finally:
            dst.close()
    finally:
        src.close()


class _Scratch:
    def __init__(self, path: Path, target: Path) -> None:
        self.path = path
        self.target = target
        self.name = path.name

    async def load(self, chunks: AsyncIterable[bytes]) -> None:
        handle = await asyncio.to_thread(self.path.open, "wb")
        try:
            async for chunk in chunks:
                await asyncio.to_thread(handle.write, chunk)
        finally:
            handle.close()

        def check() -> None:
            try:
                conn = _readonly(self.path)
                try:
                    result = conn.execute("PRAGMA integrity_check").fetchone()
                finally:
                    conn.close()
            except sqlite3.DatabaseError as error:
                raise SourceError(f"the restored file is not a SQLite database: {error}") from None
            if not result or result[0] != "ok":
                raise SourceError(f"the restored database fails its integrity check: {result}")

        await asyncio.to_thread(check)

    async def row_counts(self, tables: list[str]) -> dict[str, int]:
        def count() -> dict[str, int]:
            conn = _readonly(self.path)
            try:
                present = set(_tables(conn))
                return {t: _count(conn, t) if t in present else -1 for t in tables}
            finally:
                conn.close()

        return await asyncio.to_thread(count)

    async def query(self, sql: str) -> int:
        """One read-only statement: reads only (no ``ATTACH``, ``VACUUM INTO``,
        ``PRAGMA`` or extension, which write files even on a read-only connection),
        ended after :data:`QUERY_TIMEOUT_SECONDS`; rows are counted, never held."""

        def run() -> int:
            conn = _readonly(self.path)
            deadline = time.monotonic() + QUERY_TIMEOUT_SECONDS
            conn.set_authorizer(_reads_only)
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            try:
                return sum(1 for _ in conn.execute(sql))
            except sqlite3.Error as error:
                if time.monotonic() > deadline:
                    raise SourceError(
                        f"smoke query failed: it ran longer than {QUERY_TIMEOUT_SECONDS} s"
                    ) from None
                raise SourceError(f"smoke query failed: {error}") from None
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def promote(self) -> None:
        await asyncio.to_thread(_copy, self.path, self.target)


class SqliteSource:
    engine = "sqlite"
    format = "sqlite"
    extension = ".db.gz"
    compress = True

    def __init__(self, url: str, *, largest_tables: int = 10) -> None:
        self.path = sqlite_path(url)
        self.database = self.path.stem
        self.largest_tables = largest_tables

    async def ping(self) -> None:
        if not await asyncio.to_thread(self.path.is_file):
            raise SourceError(f"no SQLite database at {self.path}")

    @contextlib.asynccontextmanager
    async def dump(self, log: LogLine) -> AsyncIterator[Dump]:
        await self.ping()
        with tempfile.TemporaryDirectory(prefix="formula-ops-dump-") as folder:
            copy = Path(folder) / "copy.db"
            await log(f"copying {self.path.name} through the online backup API")
            try:
                await asyncio.to_thread(_copy, self.path, copy)

                def counts() -> dict[str, int]:
                    conn = _readonly(copy)
                    try:
                        return _largest(conn, self.largest_tables)
                    finally:
                        conn.close()

                row_counts = await asyncio.to_thread(counts)
            except sqlite3.Error as error:
                raise SourceError(f"could not copy the SQLite database: {error}") from None

            async def chunks() -> AsyncIterator[bytes]:
                handle = await asyncio.to_thread(copy.open, "rb")
                try:
                    while chunk := await asyncio.to_thread(handle.read, CHUNK):
                        yield chunk
                finally:
                    handle.close()

            async def finished() -> None:
                return None

            yield Dump(row_counts, chunks(), finished)

    @contextlib.asynccontextmanager
    async def scratch(self, log: LogLine) -> AsyncIterator[_Scratch]:
        path = self.path.with_name(f".{self.path.name}.scratch-{new_id()}")
        await log(f"scratch database {path.name}")
        try:
            yield _Scratch(path, self.path)
        finally:
            for leftover in (path, *(Path(f"{path}-{end}") for end in ("journal", "wal", "shm"))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
