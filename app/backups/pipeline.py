"""The streaming work of backups, independent of runs and rows: take (dump → gzip →
hash → store → read back), check (re-hash the stored object), drill (load into a
scratch database, compare row counts, run smoke queries, time it) and restore (the
same, then promote the scratch database over the target).

Memory stays bounded by a chunk or an S3 part whatever the dump's size.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.backups.sources import LogLine, Source, SourceError
from app.backups.storage import Storage
from app.backups.stream import CorruptError, Digest, gunzip, gzip

logger = logging.getLogger(__name__)


class ReadBackMismatch(Exception):
    """The stored object is not what was written (or what was recorded)."""


@dataclass(frozen=True)
class Taken:
    size: int
    sha256: str
    row_counts: dict[str, int]
    duration_seconds: float


@dataclass(frozen=True)
class Checked:
    size: int
    sha256: str


@dataclass
class Drilled:
    restore_seconds: float
    row_counts: dict[str, int]
    mismatches: dict[str, dict[str, int]] = field(default_factory=dict)
    smoke: list[dict[str, object]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches and all(bool(s.get("ok")) for s in self.smoke)


async def take(
    source: Source,
    storage: Storage,
    key: str,
    log: LogLine,
    started: Callable[[str], Awaitable[None]],
) -> Taken:
    """Dump ``source`` into ``storage`` under ``key`` and read it back.

    ``started(upload_id)`` is awaited once the upload exists and before any byte is
    written, so the caller can record what to clean up should this process die. On any
    failure the upload is aborted (nothing is left under ``key``) and the error raised,
    with ``upload_removed = True`` when the abort itself succeeded (see :func:`removed`).
    """
    began = time.monotonic()
    writer = await storage.open_writer(key)
    completed = False
    try:
        await started(writer.upload_id)
        digest = Digest()
        async with source.dump(log) as dump:
            body: AsyncIterator[bytes] = dump.chunks
            if source.compress:
                body = gzip(body)
            async for chunk in digest.tap(body):
                await writer.write(chunk)
            await dump.finished()
        await log(f"dumped {digest.size} bytes; completing the upload")
        await writer.complete()
        completed = True
        checked = await check(storage, key)
        if (checked.size, checked.sha256) != (digest.size, digest.sha256):
            raise ReadBackMismatch(
                f"read back {checked.size} bytes with SHA-256 {checked.sha256}, "
                f"wrote {digest.size} bytes with SHA-256 {digest.sha256}"
            )
        await log(f"read back {checked.size} bytes, SHA-256 {checked.sha256}: match")
        return Taken(digest.size, digest.sha256, dump.row_counts, time.monotonic() - began)
    except BaseException as error:
        try:
            if completed:
                await storage.delete(key)
            else:
                await writer.abort()
        except Exception:  # the janitor removes it later (the caller kept upload_id)
            logger.warning("could not remove the upload of %s after a failure", key, exc_info=True)
        else:
            error.upload_removed = True  # type: ignore[attr-defined]
        raise


def removed(error: BaseException) -> bool:
    """Whether :func:`take` removed its upload before raising ``error``."""
    return bool(getattr(error, "upload_removed", False))


async def check(storage: Storage, key: str) -> Checked:
    """The stored object's size and SHA-256, read in full."""
    digest = Digest()
    async for _ in digest.tap(storage.read(key)):
        pass
    return Checked(digest.size, digest.sha256)


async def verify_object(storage: Storage, key: str, size: int, sha256: str) -> Checked:
    """Re-hash the object; :class:`ReadBackMismatch` when it changed."""
    checked = await check(storage, key)
    if (checked.size, checked.sha256) != (size, sha256):
        raise ReadBackMismatch(
            f"the stored object changed: {checked.size} bytes with SHA-256 {checked.sha256}, "
            f"recorded {size} bytes with SHA-256 {sha256}"
        )
    return checked


async def _at_most(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """``chunks``, refused once they exceed the recorded ``size`` (a replaced object is
    not read, nor decompressed, past what the backup stored)."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise ReadBackMismatch(
                f"the stored object changed: more than the recorded {size} bytes"
            )
        yield chunk


async def _stage(storage: Storage, key: str, size: int, sha256: str, path: Path) -> None:
    """Copy the object to ``path``, hashing it; :class:`ReadBackMismatch` (before any
    byte of it reaches a database program) when it is not the recorded object."""
    digest = Digest()
    handle = await asyncio.to_thread(path.open, "xb")
    try:
        async for chunk in digest.tap(_at_most(storage.read(key), size)):
            await asyncio.to_thread(handle.write, chunk)
    finally:
        handle.close()
    if (digest.size, digest.sha256) != (size, sha256):
        raise ReadBackMismatch(
            f"the stored object changed: {digest.size} bytes with SHA-256 "
            f"{digest.sha256}, recorded {size} bytes with SHA-256 {sha256}"
        )


async def _read(path: Path, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, chunk_size):
            yield chunk
    finally:
        handle.close()


async def drill(
    source: Source,
    storage: Storage,
    key: str,
    *,
    size: int,
    sha256: str,
    row_counts: dict[str, int],
    smoke_queries: list[str],
    log: LogLine,
    promote: bool = False,
    stage_dir: Path | None = None,
) -> Drilled:
    """Fetch the object into a local file under ``stage_dir`` (the system's temporary
    folder by default; it needs the object's size free) while hashing it, and only when
    it is the recorded object load it into a scratch database beside ``source``'s:
    nothing a changed object holds ever reaches ``psql`` or ``pg_restore``. Then compare
    the row counts recorded at backup time, run the smoke queries, and time it all (the
    RTO, download included). With ``promote`` (a restore), the scratch database then
    replaces the target, but only if everything matched."""
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="formula-ops-restore-", dir=stage_dir) as folder:
        staged = Path(folder) / "object"
        await _stage(storage, key, size, sha256, staged)
        await log(f"fetched {size} bytes, SHA-256 {sha256}: match")
        return await _load_and_check(
            source, staged, row_counts, smoke_queries, log, promote=promote, began=began
        )


async def _load_and_check(
    source: Source,
    staged: Path,
    row_counts: dict[str, int],
    smoke_queries: list[str],
    log: LogLine,
    *,
    promote: bool,
    began: float,
) -> Drilled:
    async with source.scratch(log) as scratch:
        body = _read(staged)
        try:
            await scratch.load(gunzip(body) if source.compress else body)
        except CorruptError as error:
            raise SourceError(f"the stored backup is damaged: {error}") from None
        counts = await scratch.row_counts(sorted(row_counts))
        result = Drilled(0.0, counts)
        for table, expected in sorted(row_counts.items()):
            if counts.get(table) != expected:
                result.mismatches[table] = {"expected": expected, "restored": counts.get(table, -1)}
        for query in smoke_queries:
            try:
                rows = await scratch.query(query)
                result.smoke.append({"query": query, "ok": True, "rows": rows})
            except SourceError as error:
                result.smoke.append({"query": query, "ok": False, "error": str(error)})
        await log(
            f"restored into {scratch.name}: {len(counts)} tables counted, "
            f"{len(result.mismatches)} mismatched, "
            f"{sum(1 for s in result.smoke if not s['ok'])} smoke queries failed"
        )
        if promote and result.passed:
            await scratch.promote()
            await log(f"{scratch.name} replaced {source.database}")
        result.restore_seconds = time.monotonic() - began
        return result
