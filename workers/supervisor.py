"""Running workers: one in this process, or several under a supervisor.

:func:`run_worker` runs one arq worker until SIGTERM or SIGINT, then stops it (its jobs
are cancelled; arq retries them) and closes its connections.

:func:`supervise` starts ``processes`` children, each ``python -m workers.supervisor``
running :func:`run_worker` with its own event loop, database pool and Redis
connections (a fresh interpreter: nothing is inherited through a fork). The parent
only waits:

- SIGTERM or SIGINT is forwarded to every child, and the parent waits for them; it
  exits 0 when each ended cleanly. A second signal, or a child still running
  :data:`STOP_TIMEOUT` seconds after the first, is answered with SIGKILL.
- A child that ends while no stop was asked for (a crash, the OOM killer) is started
  again after a short back-off; the others go on. More than ``max_restarts`` such
  deaths within ``restart_window`` seconds (a crash loop: a stale schema at start-up,
  a broken configuration) stop the other children and exit 1, so the service manager
  (compose ``restart:``, systemd ``Restart=``) sees it, and a child that cannot start
  never loops unnoticed.
- On Linux each child asks for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``),
  so a supervisor killed with SIGKILL leaves no worker behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys

from app.core import metrics
from app.core.logging import configure_logging
from app.core.settings import Settings, get_settings

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


# -- one worker in this process -----------------------------------------------------------


def run_worker(settings: Settings) -> int:
    """Run one worker until SIGTERM or SIGINT; the exit code (1 if it failed)."""
    return asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> int:
    from workers.main import create_worker, stop_worker

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    worker = create_worker(settings, handle_signals=False)
    worker_task = asyncio.create_task(worker.main(), name="worker")
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    code = 0
    try:
        await asyncio.wait({worker_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if worker_task.done():
            error = None if worker_task.cancelled() else worker_task.exception()
            logger.error("the worker stopped unexpectedly", exc_info=error)
            code = 1
    finally:
        stop_task.cancel()
        await stop_worker(worker, worker_task)
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    return code


# -- several worker processes -------------------------------------------------------------


MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def supervise(
    processes: int,
    *,
    stop_timeout: float = STOP_TIMEOUT,
    max_restarts: int = MAX_RESTARTS,
    restart_window: float = RESTART_WINDOW,
) -> int:
    """Run ``processes`` worker processes until SIGTERM or SIGINT; the exit code."""
    if processes < 1:
        raise ValueError("processes must be at least 1")
    return asyncio.run(_supervise(processes, stop_timeout, max_restarts, restart_window))


async def _supervise(
    processes: int, stop_timeout: float, max_restarts: int, restart_window: float
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    children: list[asyncio.subprocess.Process] = []  # every child ever started
    signals: list[signal.Signals] = []
    deaths: list[float] = []  # when children died unexpectedly (monotonic)
    crash_loop = False
    stopped: list[asyncio.subprocess.Process] = []  # the children a stop signal reached

    def running() -> list[asyncio.subprocess.Process]:
        return [child for child in children if child.returncode is None]

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig)
        if len(signals) == 1:
            stopped.extend(running())
            logger.info("%s: stopping %d worker processes", sig.name, len(stopped))
            _send(children, sig)
            stop.set()
        else:
            logger.warning("%s again: killing the worker processes", sig.name)
            _send(children, signal.SIGKILL)

    async def start(number: int) -> asyncio.subprocess.Process:
        child = await _start_child()
        children.append(child)
        if signals:  # a stop signal arrived while it started
            stopped.append(child)
            _send([child], signals[0])
        logger.info("worker process %d of %d: pid %d", number, processes, child.pid)
        return child

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        slots: dict[asyncio.Task[int], tuple[int, asyncio.subprocess.Process]] = {}
        for number in range(1, processes + 1):
            if stop.is_set():
                break
            child = await start(number)
            slots[asyncio.create_task(child.wait())] = (number, child)
        stopping = asyncio.create_task(stop.wait())
        while slots and not stop.is_set():
            done, _ = await asyncio.wait({*slots, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                break
            for task in done:
                number, child = slots.pop(task)
                metrics.process_ended(child.pid)
                now = loop.time()
                deaths[:] = [t for t in deaths if now - t < restart_window] + [now]
                if len(deaths) > max_restarts:
                    logger.error(
                        "worker process %d exited unexpectedly (%s): %d deaths within "
                        "%.0f s, a crash loop; stopping the others",
                        child.pid,
                        _describe(child.returncode),
                        len(deaths),
                        restart_window,
                    )
                    crash_loop = True
                    continue
                delay = min(0.5 * 2 ** (len(deaths) - 1), 10.0)
                logger.error(
                    "worker process %d exited unexpectedly (%s); starting it again in %.1f s",
                    child.pid,
                    _describe(child.returncode),
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
                if stop.is_set():
                    break
                child = await start(number)
                slots[asyncio.create_task(child.wait())] = (number, child)
            if crash_loop:
                break
        stopping.cancel()
        if crash_loop:
            _send(children, signal.SIGTERM)
        waits = [asyncio.create_task(child.wait()) for child in running()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=stop_timeout)
            if pending:
                logger.warning(
                    "%d worker processes still running after %.0f s: killing them",
                    len(pending),
                    stop_timeout,
                )
                _send(children, signal.SIGKILL)
                await asyncio.wait(pending)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    clean = {0, -signal.SIGTERM, *(-sig for sig in signals)}
    unclean = [c for c in stopped if c.returncode not in clean]
    for child in unclean:
        logger.error("worker process %d ended with %s", child.pid, _describe(child.returncode))
    return 1 if crash_loop or unclean else 0


async def _start_child() -> asyncio.subprocess.Process:
    """A worker process; its output goes where the supervisor's goes."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        "--parent",
        str(os.getpid()),
        stdin=subprocess.DEVNULL,
    )


def _send(children: list[asyncio.subprocess.Process], sig: int) -> None:
    for child in children:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)


def _describe(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when ``parent`` dies (Linux); exit now if it already has."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(1)


def child_main(argv: list[str] | None = None) -> None:
    """A worker process of :func:`supervise`."""
    parser = argparse.ArgumentParser(prog="python -m workers.supervisor")
    parser.add_argument("--parent", type=int, required=True, help="the supervisor's pid")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format or "json", with_pid=True)
    sys.exit(run_worker(settings))


if __name__ == "__main__":
    child_main()
