"""The public status, cached per process and keyed by the status revision.

Every transaction that changes what the page shows bumps the revision
(:func:`app.components.revision.bump`), so a request reads that one row (the read of
:func:`app.components.revision.current`) and serves the bytes built for it; the first
request after a change reads the tables again. Every API process reads the shared
revision, so a change is visible at once on each, with no message between them.

Reads of the revision are coalesced (:class:`RevisionReader`): requests that arrive
while one read is in flight share the next read, which starts after all of them
arrived, so no answer predates its request, and under load one query serves many.

An entry also depends on the day (the HTML page's 90-day history); the cache keeps a
few entries and forgets the oldest. Its bodies depend on the page's URL too (from the
settings, else the request's host), so a request naming another host costs a rendering,
never a read of the tables.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.context import AppContext
from app.core.db import utcnow
from app.core.resources import ResourceKey
from app.status import presenters, service
from app.status.presenters import PageInfo
from app.status.service import Snapshot

MAX_ENTRIES = 4  # revisions (and days) kept
MAX_BODIES = 64  # bodies kept per revision

Render = Callable[[Snapshot, PageInfo], str]


@dataclass(frozen=True)
class Body:
    content: bytes
    etag: str  # quoted, strong: a hash of the content

    @classmethod
    def of(cls, content: bytes) -> Body:
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()[:18]).decode()
        return cls(content, f'"{digest}"')


@dataclass
class Entry:
    """The status at one revision, and the bodies rendered from it, by document and page
    (name and URL: the URL comes from the request's host when no setting names it)."""

    snapshot: Snapshot
    bodies: dict[tuple[str, PageInfo], Body] = field(default_factory=dict)


class RevisionReader:
    """``revision.current`` for many concurrent callers: a caller waits for the next
    read, one that starts after it called; one read at a time.

    The reads go through one connection of their own (no pool checkout or ping per
    read), kept for the life of the application context (:data:`READER`) and replaced
    after an error, in autocommit: each read sees every committed change."""

    def __init__(self, context: AppContext) -> None:
        self._engine = context.engine
        self._connection: AsyncConnection | None = None
        self.reads = 0  # revision reads made (for the tests and the curious)
        self._next: asyncio.Future[int] | None = None
        self._reading: asyncio.Task[None] | None = None

    async def read(self) -> int:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        waiting = self._next
        if self._reading is None:
            self._reading = asyncio.create_task(self._read_all())
        return await asyncio.shield(waiting)

    async def _read_all(self) -> None:
        try:
            while self._next is not None:
                batch, self._next = self._next, None
                try:
                    value = await self._read_once()
                except Exception as exc:  # every waiter gets it
                    batch.set_exception(exc)
                    batch.exception()  # retrieved: a waiter that went away logs nothing
                else:
                    batch.set_result(value)
        finally:
            self._reading = None

    async def _read_once(self) -> int:
        if self._connection is None:
            engine = self._engine
            if engine.dialect.name != "sqlite":  # sqlite3 connections are in autocommit
                engine = engine.execution_options(isolation_level="AUTOCOMMIT")
            self._connection = await engine.connect()
        try:
            # The driver's own connection: one statement in autocommit, nothing of
            # SQLAlchemy's per statement (on SQLite, not even the BEGIN it would send).
            raw = (await self._connection.get_raw_connection()).driver_connection
            if self._engine.dialect.name == "sqlite":  # aiosqlite: one trip to its thread
                rows = list(await raw.execute_fetchall(READ_REVISION))  # type: ignore[union-attr]
                row = rows[0] if rows else None
            else:
                cursor = await raw.execute(READ_REVISION)  # type: ignore[union-attr]
                row = await cursor.fetchone()
                await cursor.close()
        except Exception:
            await self.aclose()
            raise
        self.reads += 1
        return int(row[0]) if row else 0

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


# What revision.current reads, as plain SQL: no statement to compile or look up per read.
READ_REVISION = "SELECT revision FROM status_revision WHERE id = 1"
READER: ResourceKey[RevisionReader] = ResourceKey("public status revision reader")


def reader(context: AppContext) -> RevisionReader:
    """The context's reader (made on first use, closed with the context)."""
    if READER not in context.resources:
        context.resources.add(READER, RevisionReader(context))
    return context.resources[READER]


class StatusCache:
    """One per API process (``app.state``)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[int, dt.date], Entry] = OrderedDict()

    async def body(
        self, context: AppContext, info: PageInfo, name: str, render: Render | None = None
    ) -> Body:
        """The bytes of document ``name`` (JSON, or ``render``'s text) at the current
        revision."""
        entry = await self._entry(context)
        body = entry.bodies.get((name, info))
        if body is None:
            if render is None:
                data = presenters.document(name, entry.snapshot, info)
                content = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
            else:
                content = render(entry.snapshot, info).encode()
            if len(entry.bodies) >= MAX_BODIES:  # many hosts: render again, never grow
                entry.bodies.clear()
            body = entry.bodies[(name, info)] = Body.of(content)
        return body

    async def _entry(self, context: AppContext) -> Entry:
        current = await reader(context).read()
        now = utcnow()
        key = (current, now.date())
        entry = self._entries.get(key)
        if entry is None:
            async with context.sessionmaker() as session:
                entry = Entry(await service.snapshot(session, current, now))
            self._entries[key] = entry
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
        return entry
