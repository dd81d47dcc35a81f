"""Where backups are kept, behind one interface: a local folder (``file:///path``) or
S3 (``s3://bucket/prefix``, :mod:`app.backups.storage_s3`).

A writer streams an object in chunks and makes it visible only on :meth:`complete`
(a file is renamed into place; an S3 multipart upload is completed): a reader never
sees half an object under its key. What an interrupted writer left behind (a partial
file, an S3 multipart upload) is named by its ``upload_id`` so that whoever finds the
backup failed can remove it (:meth:`Storage.abort_partial`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.core.ids import new_id

CHUNK = 1 << 20  # bytes per read
PARTIAL_SUFFIX = ".partial"
# An object key: <environment>/<database>/<timestamp>_<run id>.<extension>; every part
# is checked by the caller, this refuses what could escape the storage's root.
_KEY = re.compile(r"^[A-Za-z0-9_.@+=-]+(/[A-Za-z0-9_.@+=-]+)*$")


class StorageError(Exception):
    """The storage refused or failed an operation (the message is safe to show)."""


@dataclass(frozen=True)
class Partial:
    """An unfinished upload found in the storage."""

    key: str
    upload_id: str
    started_at: dt.datetime


class ObjectWriter(Protocol):
    # What names the unfinished upload (S3 upload id, partial file name); record it
    # before writing so a crash leaves something to clean up by.
    upload_id: str

    async def write(self, chunk: bytes) -> None: ...

    async def complete(self) -> None:
        """Make the object visible under its key (all or nothing)."""

    async def abort(self) -> None:
        """Remove what was written (idempotent)."""


class Storage(Protocol):
    url: str  # the base URL, e.g. ``file:///var/backups`` or ``s3://bucket/prefix``

    def object_url(self, key: str) -> str: ...

    async def open_writer(self, key: str) -> ObjectWriter: ...

    def read(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """The object's bytes, streamed; :class:`StorageError` when it is missing."""
        ...

    async def size(self, key: str) -> int | None:
        """The stored object's size; ``None`` when there is none."""

    async def delete(self, key: str) -> None:
        """Remove the object (no error when it is already gone)."""

    async def abort_partial(self, key: str, upload_id: str) -> None:
        """Remove what an interrupted writer of ``key`` left (no error when nothing)."""

    async def partials(self, older_than: dt.timedelta) -> list[Partial]:
        """Unfinished uploads started more than ``older_than`` ago."""
        ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise StorageError(f"not a valid object key: {key!r}")
    return key


# -- a local folder ----------------------------------------------------------------------


class _FileWriter:
    def __init__(self, final: Path, partial: Path) -> None:
        self.final = final
        self.partial = partial
        self.upload_id = partial.name
        self._file = partial.open("xb")

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._file.write, chunk)

    async def complete(self) -> None:
        def finish() -> None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.partial, self.final)

        await asyncio.to_thread(finish)

    async def abort(self) -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)


class FileStorage:
    """Objects are files under a root folder; a writer writes ``<key>.<id>.partial``
    beside the final name and renames it into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def object_url(self, key: str) -> str:
        return self._path(key).as_uri()

    async def open_writer(self, key: str) -> ObjectWriter:
        final = self._path(key)
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        partial = final.with_name(f"{final.name}.{new_id()}{PARTIAL_SUFFIX}")
        return _FileWriter(final, partial)

    async def read(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise StorageError(f"no object {key!r} in {self.url}") from None
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def abort_partial(self, key: str, upload_id: str) -> None:
        if "/" in upload_id or not upload_id.endswith(PARTIAL_SUFFIX):
            raise StorageError(f"not a partial file name: {upload_id!r}")
        await asyncio.to_thread(self._path(key).with_name(upload_id).unlink, missing_ok=True)

    async def partials(self, older_than: dt.timedelta) -> list[Partial]:
        def scan() -> list[Partial]:
            cutoff = dt.datetime.now(dt.UTC) - older_than
            found = []
            for path in self.root.rglob(f"*{PARTIAL_SUFFIX}"):
                started = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
                if started < cutoff:
                    final = path.name.rsplit(".", 2)[0]
                    key = path.with_name(final).relative_to(self.root).as_posix()
                    found.append(Partial(key, path.name, started))
            return found

        if not self.root.exists():
            return []
        return await asyncio.to_thread(scan)
