"""``serve``, ``api`` and ``worker``: the processes of Formula Ops.

``serve`` is the embedded default (migrations, an embedded Redis, the API and a worker in
one process); ``api`` and ``worker`` are the production processes. Both servers run
uvicorn with :data:`app.cli.serving.UVICORN_OPTIONS`. What the processes run (uvicorn,
the application, the worker) is imported by each command when it starts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.output import error

if TYPE_CHECKING:
    import uvicorn

    from app.core.settings import Settings
    from app.embedded.redis import EmbeddedRedis

logger = logging.getLogger("app.cli.server")

HostOption = Annotated[str | None, typer.Option(help="Address to bind (default: settings).")]
PortOption = Annotated[int | None, typer.Option(help="Port to bind (default: settings).")]


def _with_address(host: str | None = None, port: int | None = None) -> Settings:
    from app.core.settings import get_settings

    settings = get_settings()
    update: dict[str, Any] = {}
    if host is not None:
        update["host"] = host
    if port is not None:
        update["port"] = port
    return settings.model_copy(update=update) if update else settings


def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Embedded default: migrate, start Redis, run the API and a worker in one process."""
    from pydantic import SecretStr

    from app.core import migrate
    from app.core.logging import configure_logging
    from app.core.metrics import prepare_multiprocess
    from app.embedded.redis import EmbeddedRedis, EmbeddedRedisMissing

    settings = _with_address(host, port)
    configure_logging(settings.log_level, settings.log_format or "text")
    prepare_multiprocess(settings.state_dir)
    embedded: EmbeddedRedis | None = None
    try:
        if settings.redis_url is None:
            embedded = EmbeddedRedis(settings.state_dir)
            try:
                url = embedded.start()
            except EmbeddedRedisMissing as exc:
                embedded = None
                error(f"formula-ops serve: {exc}")
                raise typer.Exit(2) from None
            settings = settings.model_copy(update={"redis_url": SecretStr(url)})
        migrate.upgrade(settings)
        code = asyncio.run(_serve(settings, embedded))
    finally:
        if embedded is not None:
            embedded.stop()
    raise typer.Exit(code)


async def _serve(settings: Settings, embedded: EmbeddedRedis | None = None) -> int:
    from app.bootstrap import build_context
    from app.cli.serving import QuietServer, uvicorn_config
    from app.embedded.seed import LocalPorts, seed_local, stop_process_services
    from app.main import create_app
    from workers.main import create_worker, stop_worker

    context = build_context(settings)
    ports = LocalPorts()
    await stop_process_services(context)  # left behind by a serve that was killed
    if settings.seed_local_environment:
        await seed_local(context, ports)
    server = QuietServer(uvicorn_config(create_app(settings, context=context), settings))
    # The worker shares the API's registry and counts its runs in the API's metrics (one
    # set per process).
    worker = create_worker(
        settings, handle_signals=False, registry=context.registry, metrics=context.metrics
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    server_task = asyncio.create_task(server.serve(), name="api")
    worker_task = asyncio.create_task(worker.main(), name="worker")
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    announce = asyncio.create_task(_announce(server, settings))
    watchdog = asyncio.create_task(_keep_running(embedded)) if embedded is not None else None
    code = 0
    try:
        done, _ = await asyncio.wait(
            {server_task, worker_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done - {stop_task}:
            error = task.exception()
            logger.error("%s stopped unexpectedly: %r", task.get_name(), error)
            code = 1
    finally:
        announce.cancel()
        stop_task.cancel()
        if watchdog is not None:
            watchdog.cancel()
        server.should_exit = True
        await stop_worker(worker, worker_task)
        await asyncio.gather(server_task, worker_task, return_exceptions=True)
        try:
            await stop_process_services(context)
        finally:
            ports.release()
            await context.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        logger.info("stopped")
    return code


async def _keep_running(embedded: EmbeddedRedis, every: float = 0.5) -> None:
    """Start the embedded redis-server again (same socket) whenever it has ended; the
    clients reconnect by themselves."""
    delay = every
    while True:
        await asyncio.sleep(delay)
        try:
            await asyncio.to_thread(embedded.ensure_running)
        except Exception:
            logger.exception("could not start the embedded Redis again; retrying")
            delay = min(delay * 2, 5.0)
        else:
            delay = every


async def _announce(server: uvicorn.Server, settings: Settings) -> None:
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.05)
    print(f"Formula Ops is serving on http://{settings.host}:{settings.port}", flush=True)


def api(
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Production: serve the API only (needs FORMULA_OPS_DATABASE_URL and _REDIS_URL)."""
    import uvicorn

    from app.cli.serving import UVICORN_OPTIONS, uvicorn_config
    from app.core.logging import configure_logging
    from app.core.metrics import prepare_multiprocess

    settings = _with_address(host, port)
    configure_logging(settings.log_level, settings.log_format or "json", with_pid=workers > 1)
    prepare_multiprocess(settings.state_dir)
    if workers > 1:
        uvicorn.run(
            "app.cli.server:api_process_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            **UVICORN_OPTIONS,
        )
        return
    from app.main import create_app

    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()


def api_process_app() -> Any:
    """The application of one ``api --workers N`` process (uvicorn starts each afresh,
    so its logging is set up again here; its metrics go to the directory the parent
    prepared, named in the inherited environment)."""
    from app.core.logging import configure_logging
    from app.core.settings import get_settings
    from app.main import create_app

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format or "json", with_pid=True)
    return create_app(settings)


def worker(
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes, each with its own event loop and connections. Above 1 a "
            "supervisor starts them, forwards SIGTERM/SIGINT to them and waits (a second "
            "signal kills them). A child that dies unexpectedly is started again; more "
            "than FORMULA_OPS_WORKER_MAX_RESTARTS deaths within "
            "FORMULA_OPS_WORKER_RESTART_WINDOW_SECONDS (a crash loop) stop the others "
            "and exit 1, for the service manager.",
        ),
    ] = 1,
) -> None:
    """Production: run an arq worker (needs FORMULA_OPS_DATABASE_URL and _REDIS_URL).

    Stops on SIGTERM or SIGINT (exit 0); its running jobs are cancelled and run again (a
    run in progress goes back to the queue at once and resumes after its last step)."""
    from app.core.logging import configure_logging
    from app.core.metrics import prepare_multiprocess
    from app.core.settings import get_settings
    from workers.supervisor import run_worker, supervise

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format or "json")
    prepare_multiprocess(settings.state_dir)
    if processes == 1:
        raise typer.Exit(run_worker(settings))
    raise typer.Exit(
        supervise(
            processes,
            max_restarts=settings.worker_max_restarts,
            restart_window=settings.worker_restart_window_seconds,
        )
    )
