"""What arq hands every job as ``ctx``: the worker's state (:class:`WorkerState`), built
by the start-up hook and released by the shutdown hook.

Names: ``ctx`` is arq's per-worker dict and only that; ``context`` is always the
application's :class:`~app.core.context.AppContext` (here ``ctx["context"]``), the one
composition root the API, the worker and the command line share."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, TypedDict

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit.sealer import start_sealer, stop_sealer
from app.bootstrap import build_context
from app.core.context import AppContext
from app.core.ids import new_id
from app.core.migrate import schema_is_current
from app.core.settings import Settings
from app.webhooks.dispatcher import start_dispatcher, stop_dispatcher

logger = logging.getLogger(__name__)


class WorkerState(TypedDict):
    settings: Settings
    context: AppContext
    worker_id: str


class StaleSchema(RuntimeError):
    """The database's schema is behind this code's migrations (or empty)."""


# A worker process started while the database restarts waits for it (each attempt
# logged) instead of exiting: the supervisor would count the exit towards a crash loop.
DATABASE_WAIT_SECONDS = 60.0
_DATABASE_DOWN = (OperationalError, InterfaceError, OSError)


async def wait_for_schema(engine: AsyncEngine, *, within: float = DATABASE_WAIT_SECONDS) -> bool:
    """:func:`schema_is_current`, asked again while the database cannot be reached, for
    ``within`` seconds at most (then its error is raised)."""
    deadline = time.monotonic() + within
    delay = 0.25
    while True:
        try:
            return await schema_is_current(engine)
        except _DATABASE_DOWN as error:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning(
                "database unreachable at start-up (%s); trying again in %.2g s",
                type(error).__name__,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    # ``serve`` hands over its registry and the API's metrics, so one process keeps one set.
    context = build_context(settings, registry=ctx.get("registry"), metrics=ctx.get("metrics"))
    try:
        current = await wait_for_schema(context.engine)
    except BaseException:
        await context.aclose()
        raise
    if not current:
        await context.aclose()
        raise StaleSchema("the database schema is behind this code; run `formula-ops migrate`")
    ctx["context"] = context
    ctx["sealer"] = start_sealer(
        context.engine, context.metrics, interval=settings.audit_seal_interval_seconds
    )
    ctx["dispatcher"] = start_dispatcher(context)
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-12:]}"


async def shutdown(ctx: dict[str, Any]) -> None:
    await stop_dispatcher(ctx.pop("dispatcher", None))
    await stop_sealer(ctx.pop("sealer", None))
    context: AppContext | None = ctx.get("context")
    if context is not None:
        await context.aclose()
