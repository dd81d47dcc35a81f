"""An idle dispatcher only reads: on SQLite it never waits for the write lock."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from app.core.context import AppContext
from app.webhooks import dispatcher
from tests.webhooks.test_delivery import emit, ping_data


async def test_an_idle_tick_takes_no_write_lock(context: AppContext, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the write lock is SQLite's")
    path = context.settings.state_dir / "formula-ops.db"
    holder = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        async with asyncio.timeout(1.0):
            done = await dispatcher.dispatch_once(context)
        assert done == dispatcher.Dispatched(events=0, deliveries=0, batches=0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # With an event waiting, the tick does write (and marks it dispatched).
    await emit(context, "webhook.test", ping_data("e"))
    done = await dispatcher.dispatch_once(context)
    assert done.events == 1
