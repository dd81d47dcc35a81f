"""The public status, cached per process and keyed by the status revision.

Every transaction that changes what the page shows bumps the revision
(:func:`app.components.revision.bump`), so a request reads that one row
(:func:`app.components.revision.current`) and serves the bytes built for it; the first
request after a change reads the tables again. Every API process reads the shared
revision, so a change is visible at once on each, with no message between them.

An entry also depends on the page's URL (from the settings, else the request's) and on
the day (the HTML page's 90-day history); the cache keeps a few entries and forgets the
oldest.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from app.components import revision
from app.core.db import utcnow
from app.status import presenters, service
from app.status.presenters import PageInfo
from app.status.service import Snapshot

MAX_ENTRIES = 8

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
    snapshot: Snapshot
    info: PageInfo
    bodies: dict[str, Body] = field(default_factory=dict)


class StatusCache:
    """One per API process (``app.state``)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[int, str, dt.date], Entry] = OrderedDict()

    async def body(
        self, session: AsyncSession, info: PageInfo, name: str, render: Render | None = None
    ) -> Body:
        """The bytes of document ``name`` (JSON, or ``render``'s text) at the current
        revision."""
        entry = await self._entry(session, info)
        body = entry.bodies.get(name)
        if body is None:
            if render is None:
                data = presenters.document(name, entry.snapshot, info)
                content = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
            else:
                content = render(entry.snapshot, info).encode()
            body = entry.bodies[name] = Body.of(content)
        return body

    async def _entry(self, session: AsyncSession, info: PageInfo) -> Entry:
        current = await revision.current(session)
        now = utcnow()
        key = (current, info.url, now.date())
        entry = self._entries.get(key)
        if entry is None or entry.info != info:
            entry = Entry(await service.snapshot(session, current, now), info)
            self._entries[key] = entry
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
        return entry
