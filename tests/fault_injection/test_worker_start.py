"""A worker process that starts while PostgreSQL restarts waits for it instead of exiting
(the supervisor would count each exit towards a crash loop). The database appears after
a while here as a TCP forwarder to the real one, opened on a port that refused at first."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.settings import Settings
from tests.helpers import free_port
from workers.state import wait_for_schema

pytestmark = pytest.mark.one_backend("postgres")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def forwarder(port: int, target: tuple[str, int]) -> AsyncIterator[None]:
    """127.0.0.1:``port`` forwarded to ``target`` while the block runs."""

    open_writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        open_writers.extend((writer, upstream_writer))
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for writer in open_writers:
            writer.close()
        await server.wait_closed()


def _through(settings: Settings, port: int) -> str:
    url = make_url(settings.database_url_value)
    return url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


async def test_a_worker_start_waits_for_a_database_that_comes_back(settings: Settings) -> None:
    url = make_url(settings.database_url_value)
    port = free_port()
    engine = create_async_engine(_through(settings, port), pool_pre_ping=True)
    began = time.monotonic()
    waiting = asyncio.create_task(wait_for_schema(engine, within=30))
    try:
        await asyncio.sleep(1.5)  # refused meanwhile: nothing listens on the port
        assert not waiting.done()
        async with forwarder(port, (url.host or "127.0.0.1", url.port or 5432)):
            assert await asyncio.wait_for(waiting, 20) is True  # migrated: the schema is current
        assert time.monotonic() - began >= 1.5
    finally:
        waiting.cancel()
        await engine.dispose()


async def test_a_database_that_stays_away_ends_the_wait_with_its_error(
    settings: Settings,
) -> None:
    engine = create_async_engine(_through(settings, free_port()))
    began = time.monotonic()
    try:
        with pytest.raises(OperationalError):
            await wait_for_schema(engine, within=1.0)
    finally:
        await engine.dispose()
    assert 0.5 <= time.monotonic() - began < 10
