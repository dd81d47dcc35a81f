"""Helpers shared by tests: real servers, real workers, nothing mocked."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from fastapi import FastAPI
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.audit.sealer import oldest_unsealed_age, seal_pending
from app.auth.ratelimit import WINDOW_SECONDS
from app.cli.serving import QuietServer, uvicorn_config
from app.core.context import AppContext
from app.core.settings import RunbookSettings, Settings
from app.drivers.base import ServiceSpec
from app.environments.engines import driver_for
from app.environments.models import Service
from workers.main import create_worker

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "FORMULA_OPS_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

T = TypeVar("T")


# The Redis the tests use (each under a key prefix of its own).
REDIS_URL = os.environ.get("FORMULA_OPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` in a fresh thread (for code that starts its own event loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def create_pg_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        # A commit in a test database does not wait for the disk: only a crash of the shared
        # server could lose the last ones, and no test crashes it (the fault tests that
        # kill PostgreSQL start private servers).
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    return pg_url(name)


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run_worker_burst(settings: Settings) -> int:
    """Run a real arq worker until the queue is empty; returns the jobs it completed."""
    worker = create_worker(settings, burst=True, poll_delay=0, handle_signals=False)
    try:
        await worker.main()
    finally:
        await worker.close()
    return int(worker.jobs_complete)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def live(app: FastAPI, context: AppContext) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port, with the CLI's options."""
    settings = context.settings.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    server = QuietServer(uvicorn_config(app, settings))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await task


async def seal_audit(context: AppContext) -> int:
    """Seal the committed audit events now, as the sealer of a worker or API process does
    within its interval; the number sealed here. When a running worker's sealer holds the
    lock, wait until it has sealed them."""
    sealed, deadline = 0, time.monotonic() + 30
    while True:
        done = await seal_pending(context.engine)
        sealed += done.count
        if not done.locked_out and await oldest_unsealed_age(context.engine) is None:
            return sealed
        if time.monotonic() > deadline:
            raise TimeoutError("audit events stay unsealed")
        await asyncio.sleep(0.02)


async def last_audit_seq(context: AppContext) -> int:
    """The audit chain's last event number, once every committed event is sealed (tests
    read what their requests add after it)."""
    await seal_audit(context)
    async with context.sessionmaker() as session:
        return int(await session.scalar(select(func.max(AuditEvent.seq))) or 0)


async def audit_events_after(
    context: AppContext, seq: int, *, action: str | None = None
) -> list[AuditEvent]:
    """The audit events after ``seq`` in chain order (of one action when given), once
    every committed event is sealed."""
    await seal_audit(context)
    statement = select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq)
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    async with context.sessionmaker() as session:
        return list(await session.scalars(statement))


async def raw_get(base_url: str, path: str, headers: dict[str, str]) -> int:
    """One GET on a connection of its own (as a flood of separate clients sends them);
    the answer's status."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return status


async def fresh_window(needed: float = 20) -> None:
    """Start in a limiter window (fixed, one minute) with ``needed`` seconds left, so a
    sequence's count is not reset half-way by the next window."""
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < needed:
        await asyncio.sleep(left + 0.05)


async def stop_services(context: AppContext) -> None:
    async with context.sessionmaker() as session:
        services = list(await session.scalars(select(Service)))

    async def quiet(line: str) -> None:
        pass

    for s in services:
        spec = ServiceSpec(s.environment, s.name, s.driver, s.config, s.health_url)
        await (await driver_for(context, spec)).stop(spec, quiet)


async def no_dns(host: str, port: int) -> list[str]:
    """The tests' resolver for webhook destinations: no name resolves, so nothing is ever
    asked of a DNS server off this machine (receivers listen on 127.0.0.1 literals)."""
    raise socket.gaierror(socket.EAI_NONAME, f"{host}: no DNS in tests")


# The shipped catalog, and the tests' own runbooks beside it (names starting ``test-``).
TEST_CATALOG = Path(__file__).parent / "runbooks" / "catalog"
RUNBOOKS = RunbookSettings(catalog_dirs=[*RunbookSettings().catalog_dirs, TEST_CATALOG])
