"""The job that executes a run: claim it, then hand it to its kind's executor."""

from __future__ import annotations

import datetime as dt

from app.runs import service as run_service
from workers.context import WorkerContext


async def execute_run(ctx: WorkerContext, run_id: str) -> str | None:
    context = ctx["context"]
    lease = dt.timedelta(seconds=context.settings.run_lease_seconds)
    status = await run_service.run_job(
        context.unit_of_work, run_id, owner=ctx["worker_id"], lease=lease
    )
    return status.value if status is not None else None
