"""Step actions: the typed things a step can do. Each takes validated parameters (data,
never a shell string built from them) and a :class:`StepContext`, and returns a
:class:`StepOutcome`.

An action is an :class:`Action` registered under its name in the :data:`ACTIONS`
catalog by its domain's ``register(registry)``; this module defines the built-in ones
(``http``, ``shell``, ``wait``: :mod:`app.runs.registration`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.child_env import child_env
from app.core.context import AppContext
from app.core.registry import CatalogKey
from app.runs.models import Level, StepStatus

MAX_OUTPUT = 64 * 1024  # bytes of output kept per step

# The runbook's latency thresholds (an ``http`` step's defaults); the health check's
# other thresholds are in app.health_checks.thresholds.
LATENCY_WARNING_MS = 1000
LATENCY_CRITICAL_MS = 2000


@dataclass
class StepOutcome:
    status: StepStatus
    output: str = ""
    level: Level | None = None
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


LogLine = Callable[[str], Awaitable[None]]


@dataclass
class StepContext:
    """What a step's action receives besides its parameters."""

    context: AppContext
    log: LogLine
    run_id: str = ""
    position: int = 0  # the step's position in its run


class Params(BaseModel):
    """Base of a step action's parameters; each one's validator is built when a runbook
    using the action is first loaded or run (``defer_build``), not when the process starts."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


Handler = Callable[[Any, StepContext], Awaitable[StepOutcome]]


@dataclass(frozen=True)
class Action:
    """A step action: its parameters' model, what it does, and whether it is
    idempotent (safe to run again if a worker died while it ran)."""

    params: type[Params]
    handler: Handler
    idempotent: bool


ACTIONS: CatalogKey[Action] = CatalogKey("step action")


def bounded(text_value: str) -> tuple[str, bool]:
    """At most :data:`MAX_OUTPUT` bytes, keeping the end (where errors are); truncated?"""
    raw = text_value.encode(errors="replace")
    if len(raw) <= MAX_OUTPUT:
        return text_value, False
    return "…[truncated]\n" + raw[-MAX_OUTPUT:].decode(errors="replace"), True


def worst(*levels: Level) -> Level:
    order = [Level.OK, Level.WARNING, Level.CRITICAL]
    return max(levels, key=order.index)


def level_outcome(level: Level, output: str, data: dict[str, Any]) -> StepOutcome:
    status = StepStatus.FAILURE if level == Level.CRITICAL else StepStatus.SUCCESS
    return StepOutcome(status, output, level, data)


# -- http ------------------------------------------------------------------------------


class HttpParams(Params):
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE"] = "GET"
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: list[int] = Field(default_factory=lambda: [200])
    # As long as an HTTP smoke test may wait: every smoke test the API stores can run.
    timeout_seconds: float = Field(default=10, gt=0, le=600)
    # Latency levels; null: no such level.
    warning_ms: float | None = LATENCY_WARNING_MS
    critical_ms: float | None = LATENCY_CRITICAL_MS


async def http_check(params: HttpParams, ctx: StepContext) -> StepOutcome:
    import httpx  # with the context's client, at its first request

    started = time.perf_counter()
    try:
        response = await ctx.context.http.request(
            params.method, params.url, headers=params.headers, timeout=params.timeout_seconds
        )
    except httpx.HTTPError as exc:
        return StepOutcome(
            StepStatus.FAILURE,
            f"{params.method} {params.url}: {type(exc).__name__}",
            Level.CRITICAL,
            {"url": params.url},
            error=f"unreachable: {type(exc).__name__}",
        )
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    data = {"url": params.url, "status_code": response.status_code, "latency_ms": latency_ms}
    if response.status_code not in params.expect_status:
        return StepOutcome(
            StepStatus.FAILURE,
            f"{params.method} {params.url} -> {response.status_code} in {latency_ms} ms",
            Level.CRITICAL,
            data,
            error=f"status {response.status_code}, expected {params.expect_status}",
        )
    level = (
        Level.CRITICAL
        if params.critical_ms is not None and latency_ms > params.critical_ms
        else Level.WARNING
        if params.warning_ms is not None and latency_ms > params.warning_ms
        else Level.OK
    )
    return level_outcome(
        level, f"{params.method} {params.url} -> {response.status_code} in {latency_ms} ms", data
    )


# -- shell -----------------------------------------------------------------------------


class ShellParams(Params):
    argv: list[str] = Field(min_length=1, description="Program and arguments; no shell.")
    timeout_seconds: float = Field(default=300, gt=0, le=24 * 3600)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Added to PATH, HOME, LANG, LC_* (the program gets nothing else).",
    )
    cwd: str | None = None


LOG_FLUSH_SECONDS = 0.5
LOG_EVENT_CHARS = 4000


def _tail(text: str, limit: int) -> str:
    """The end of ``text``, from a line start when it must be cut."""
    if len(text) <= limit:
        return text
    kept = text[-limit:]
    start = kept.find("\n")
    return kept[start + 1 :] if start != -1 else kept


async def shell(params: ShellParams, ctx: StepContext) -> StepOutcome:
    """Run a program (its own process group), streaming its output as log events. Its
    environment is :func:`app.core.child_env.child_env` of the step's ``env``."""
    env = child_env(params.env)
    try:
        process = await asyncio.create_subprocess_exec(
            *params.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            cwd=params.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return StepOutcome(StepStatus.FAILURE, error=f"cannot start {params.argv[0]}: {exc}")
    output = bytearray()
    pending = ""
    last_flush = time.monotonic()

    async def flush(*, whole_lines: bool = False) -> None:
        """Log what is pending; with ``whole_lines`` up to its last line break, so a
        value printed on one line (a secret to scrub) is not split between two events."""
        nonlocal pending, last_flush
        lines, pending = pending, ""
        if whole_lines and "\n" in lines:
            cut = lines.rfind("\n") + 1
            lines, pending = lines[:cut], lines[cut:]
        if lines:
            await ctx.log(_tail(lines, LOG_EVENT_CHARS))
        last_flush = time.monotonic()

    try:
        async with asyncio.timeout(params.timeout_seconds):
            assert process.stdout is not None
            while True:
                try:  # a line waiting to be shown goes out within LOG_FLUSH_SECONDS
                    chunk = await asyncio.wait_for(
                        process.stdout.read(65536), LOG_FLUSH_SECONDS if pending else None
                    )
                except TimeoutError:
                    await flush()
                    continue
                if not chunk:
                    break
                output += chunk
                if len(output) > 2 * MAX_OUTPUT:
                    del output[: len(output) - MAX_OUTPUT]
                pending += chunk.decode(errors="replace")
                if time.monotonic() - last_flush >= LOG_FLUSH_SECONDS:
                    await flush(whole_lines=True)
            await process.wait()
        await flush()
    except TimeoutError:
        await _kill_group(process)
        text_out, _ = bounded(output.decode(errors="replace"))
        return StepOutcome(
            StepStatus.FAILURE, text_out, error=f"timed out after {params.timeout_seconds} s"
        )
    except BaseException:
        await _kill_group(process)
        raise
    text_out, _ = bounded(output.decode(errors="replace"))
    data = {"exit_code": process.returncode}
    if process.returncode != 0:
        return StepOutcome(
            StepStatus.FAILURE, text_out, data=data, error=f"exit code {process.returncode}"
        )
    return StepOutcome(StepStatus.SUCCESS, text_out, data=data)


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """End the program and everything it started."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


# -- wait ------------------------------------------------------------------------------


class WaitParams(Params):
    seconds: float = Field(ge=0, le=24 * 3600)


async def wait(params: WaitParams, ctx: StepContext) -> StepOutcome:
    await asyncio.sleep(params.seconds)
    return StepOutcome(StepStatus.SUCCESS, f"waited {params.seconds} s")
