"""Streaming helpers: gzip in and out, and hashing while bytes pass, in bounded memory
(a multi-GB dump is never held whole)."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import AsyncIterable, AsyncIterator


class Digest:
    """Size and SHA-256 of what passed through :meth:`tap`."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    async def tap(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self._sha.update(chunk)
            self.size += len(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


async def gzip(chunks: AsyncIterable[bytes], level: int = 6) -> AsyncIterator[bytes]:
    """A gzip member (what ``gunzip`` reads) of ``chunks``."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)
    async for chunk in chunks:
        packed = packer.compress(chunk)
        if packed:
            yield packed
    yield packer.flush()


class CorruptError(Exception):
    """The stored bytes are not a complete gzip stream."""


async def gunzip(chunks: AsyncIterable[bytes], max_out: int = 1 << 20) -> AsyncIterator[bytes]:
    """The bytes a gzip stream holds, at most ``max_out`` bytes at a time (a small
    compressed chunk may expand a lot)."""
    unpacker = zlib.decompressobj(31)
    try:
        async for chunk in chunks:
            data = chunk
            while data:
                out = unpacker.decompress(data, max_out)
                if out:
                    yield out
                data = unpacker.unconsumed_tail
                if unpacker.eof:
                    if data or unpacker.unused_data:
                        raise CorruptError("bytes after the end of the gzip stream")
                    break
        if not unpacker.eof:
            raise CorruptError("the gzip stream ends early")
    except zlib.error as error:
        raise CorruptError(f"not a valid gzip stream: {error}") from None
