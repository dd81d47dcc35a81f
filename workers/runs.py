"""The job that executes a run: claim it, then run its steps (see app.runs.engine)."""

from __future__ import annotations

from app.runs import engine
from workers.state import WorkerState


async def execute_run(ctx: WorkerState, run_id: str) -> str | None:
    status = await engine.execute(ctx["context"], run_id, ctx["worker_id"])
    return status.value if status is not None else None
