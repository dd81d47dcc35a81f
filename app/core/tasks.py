"""Work that must finish once begun, even when its caller is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def run_to_end(work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` until it ends, however many times the caller is cancelled meanwhile
    (a stopping worker cancels its jobs once, and again every 0.5 s while they run:
    ``WakeableWorker.close``); then re-raise the cancellation. ``asyncio.shield`` alone
    protects the work from the first cancellation only: a second one, landing while the
    caller still waits, would leave it running on its own while the worker shuts down."""
    future = asyncio.ensure_future(work)
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait({future})  # never cancels what it waits for
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not future.cancelled():
            future.exception()  # seen: the cancellation is what the caller gets
        raise asyncio.CancelledError
    return future.result()
