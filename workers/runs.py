"""The job that executes a run: claim it, then run its steps (see app.runs.engine)."""

from __future__ import annotations

from app.core.logging import log_context
from app.runs import engine
from workers.state import WorkerState


async def execute_run(ctx: WorkerState, run_id: str) -> str | None:
    # Every line of the run carries its id (the engine adds its kind, actor and step).
    with log_context(run_id=run_id, kind=None, actor=None, step=None, request_id=None):
        status = await engine.execute(ctx["context"], run_id, ctx["worker_id"])
    return status.value if status is not None else None
