"""A stopping worker ends every running job before it closes (``WakeableWorker.close``):
arq's own close cancels each job once and waits for it, so a job that absorbed that one
cancellation (it landed between two of its awaits) ran on to its end while the worker was
taken for stopping: a deployment then finished instead of being handed back at once.
Real arq worker, real Redis (each backend's), jobs of the test's own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq.worker import func

from app.core.settings import Settings

SEEN: dict[str, Any] = {}


async def quick(ctx: dict[str, Any]) -> None:
    """Ends at once when cancelled."""
    SEEN["quick started"] = True
    await asyncio.sleep(60)


async def absorbs(ctx: dict[str, Any]) -> None:
    """Absorbs its first cancellation (as a job can when it lands between two awaits),
    then goes on for a minute unless cancelled again."""
    SEEN["absorbs started"] = True
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        SEEN["absorbed"] = time.monotonic()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        SEEN["cancelled again"] = time.monotonic()
        raise


async def stop_with(settings: Settings, jobs: list[str]) -> float:
    """Start a worker with the test's jobs, enqueue ``jobs``, stop the worker once they all
    run; how long the stop took."""
    from workers.main import create_worker, stop_worker

    SEEN.clear()
    worker = create_worker(
        settings,
        handle_signals=False,
        poll_delay=0.02,
        functions=[func(quick, name="quick"), func(absorbs)],
        cron_jobs=[],
        on_startup=None,
        on_shutdown=None,
        max_tries=1,
    )
    task = asyncio.create_task(worker.main())
    try:
        for name in jobs:
            assert await worker.pool.enqueue_job(name) is not None
        deadline = time.monotonic() + 20
        while not all(SEEN.get(f"{name} started") for name in jobs):
            assert time.monotonic() < deadline, f"jobs not started: {SEEN}"
            await asyncio.sleep(0.02)
        began = time.monotonic()
        await stop_worker(worker, task)
        return time.monotonic() - began
    finally:
        if not task.done():
            await stop_worker(worker, task)


async def test_a_job_that_absorbed_its_cancellation_is_cancelled_again(
    settings: Settings,
) -> None:
    took = await stop_with(settings, ["quick", "absorbs"])
    assert "absorbed" in SEEN, SEEN
    assert "cancelled again" in SEEN, SEEN  # else it ran its minute out
    assert SEEN["cancelled again"] - SEEN["absorbed"] < 2
    assert took < 10, took
