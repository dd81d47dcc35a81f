"""The ``docker`` step action: look at (and restart) an environment's docker services on
the engines they run on, and prune an engine's images.

A target is named, never given as a URL: ``environment`` and optionally ``service`` (one
of its services run by the ``docker`` driver; none: every one of them). Each service's
engine is its resolved ``config.docker_host`` (a name of the environment's
``docker_hosts``, a URL) or the control plane's local engine; the driver pool's
long-lived client of that engine is used.

Operations: ``ps`` (the containers, their state and health), ``logs`` (the last ``tail``
lines in a window, optionally filtered by ``grep`` in Python), ``inspect`` (without
environment values), ``stats`` (one sample), ``health`` (Docker's health check and the
service's health URL; fails when unhealthy), ``restart`` (then waits until healthy;
fails when it does not become so) and ``prune`` (dangling images, or every unused one,
of each engine once). Only ``restart`` changes what runs; ``prune`` removes images (and
running it twice is harmless). The action is declared not idempotent (``restart``); a
runbook step of a read-only operation may declare ``idempotent: true``.

Output and data hold no secret: container environment values are dropped, log lines and
texts are scrubbed of the service config's known secrets and of anything the redaction
rule recognises.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator
from sqlalchemy import select

from app.core.redaction import Scrubber, redact_text
from app.core.registry import Registry
from app.drivers import docker_ops
from app.drivers.base import DriverError, ServiceSpec
from app.drivers.docker_config import DockerEngine
from app.drivers.pool import drivers
from app.environments.engines import engine_of
from app.environments.models import Environment, Service
from app.environments.schemas import NAME
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome
from app.runs.models import Level, StepStatus

Operation = Literal["ps", "logs", "restart", "inspect", "prune", "stats", "health"]
MAX_GREP = 200


class DockerParams(Params):
    environment: str = Field(pattern=NAME, max_length=63, description="The environment's name.")
    service: str | None = Field(
        default=None,
        pattern=NAME,
        max_length=63,
        description="One of its services run by the docker driver; none: every one.",
    )
    operation: Operation
    tail: int = Field(default=50, ge=1, le=1000, description="logs: at most this many lines.")
    since_minutes: int | None = Field(
        default=None, ge=1, le=43200, description="logs: from this many minutes ago."
    )
    until_minutes: int | None = Field(
        default=None, ge=0, le=43200, description="logs: up to this many minutes ago."
    )
    grep: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_GREP,
        description="logs: keep the lines containing this text (a regular expression with "
        "`grep_regex`), among the last 5000 of the window.",
    )
    grep_regex: bool = False
    all_unused: bool = Field(
        default=False,
        description="prune: every image no container uses, not only dangling ones (this "
        "includes the previous versions kept for a rollback, which must then be pulled).",
    )
    wait_healthy_seconds: float = Field(
        default=60,
        ge=0,
        le=600,
        description="restart: wait up to this long until Docker reports it healthy and its "
        "health URL answers (0: do not wait).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DockerParams:
        if (
            self.since_minutes is not None
            and self.until_minutes is not None
            and self.until_minutes >= self.since_minutes
        ):
            raise ValueError("until_minutes must be less than since_minutes (minutes ago)")
        if self.grep is not None and self.grep_regex:
            docker_ops.line_filter(self.grep, regex=True)
        return self


@dataclass
class _Target:
    spec: ServiceSpec
    engine: DockerEngine | None

    @property
    def engine_label(self) -> str:
        url = self.engine.url if self.engine else None
        return redact_text(url) if url else "local"


class _Refused(Exception):
    """The step cannot run: its message says why (safe to show)."""


async def _targets(params: DockerParams, ctx: StepContext) -> list[_Target]:
    async with ctx.context.sessionmaker() as session:
        environment = await session.get(Environment, params.environment)
        if environment is None:
            raise _Refused(f"no environment {params.environment!r}")
        statement = select(Service).where(Service.environment == params.environment)
        if params.service is not None:
            statement = statement.where(Service.name == params.service)
        rows = list(await session.scalars(statement.order_by(Service.deploy_order, Service.name)))
        if params.service is not None and not rows:
            raise _Refused(f"no service {params.service!r} in environment {params.environment!r}")
        if params.service is not None and rows[0].driver != "docker":
            raise _Refused(
                f"service {params.service!r} runs with the {rows[0].driver} driver, not docker"
            )
        targets = []
        for row in rows:
            if row.driver != "docker":
                continue
            spec = ServiceSpec(
                row.environment,
                row.name,
                row.driver,
                dict(row.config or {}),
                row.health_url,
                row.health_timeout_seconds,
            )
            try:
                engine = await engine_of(session, row.environment, spec.config.get("docker_host"))
            except DriverError as exc:
                raise _Refused(f"{row.name}: {exc}") from None
            targets.append(_Target(spec, engine))
    if not targets:
        raise _Refused(f"environment {params.environment!r} has no docker service")
    return targets


def _driver(ctx: StepContext, target: _Target) -> Any:
    return drivers(ctx.context).get("docker", target.spec.config, connection=target.engine)


def _window(minutes: int | None) -> dt.datetime | None:
    if minutes is None:
        return None
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)


async def docker_step(params: DockerParams, ctx: StepContext) -> StepOutcome:
    try:
        targets = await _targets(params, ctx)
    except _Refused as exc:
        return _failed(params, str(exc), "docker-target-unknown")
    scrubber = Scrubber.of([t.spec.config for t in targets])
    if params.operation == "prune":
        return await _prune(params, ctx, targets, scrubber)
    results: list[dict[str, Any]] = []
    lines: list[str] = []
    for target in targets:
        result: dict[str, Any] = {"service": target.spec.name, "engine": target.engine_label}
        try:
            await _one(params, ctx, target, result, scrubber)
        except DriverError as exc:
            result["error"] = scrubber.text(str(exc))
        results.append(result)
        lines.append(_line(params.operation, result))
        await ctx.log(lines[-1])
    return _outcome(params, results, lines)


async def _one(
    params: DockerParams,
    ctx: StepContext,
    target: _Target,
    result: dict[str, Any],
    scrubber: Scrubber,
) -> None:
    driver = _driver(ctx, target)
    containers = await driver.containers(target.spec)
    result["containers"] = [docker_ops.summary_of(c) for c in containers]
    main = containers[0] if containers else None
    if params.operation == "ps":
        return
    if params.operation == "health":
        health = await driver.health(target.spec)
        result["healthy"] = health.healthy
        result["detail"] = scrubber.text(health.detail)
        result["version"] = health.version
        return
    if main is None:
        result["error"] = "no container"
        return
    result["container"] = main.name
    call = _thread(driver)
    if params.operation == "logs":
        pattern = docker_ops.line_filter(params.grep, regex=params.grep_regex)
        found, scanned = await call(
            docker_ops.log_lines,
            main,
            tail=params.tail,
            since=_window(params.since_minutes),
            until=_window(params.until_minutes),
            pattern=pattern,
        )
        kept, cut = docker_ops.bounded_lines([scrubber.text(line) for line in found])
        result.update(lines=kept, matched=len(found), scanned=scanned, truncated=cut)
    elif params.operation == "inspect":
        result["inspect"] = scrubber.value(await call(docker_ops.inspect_view, main))
    elif params.operation == "stats":
        if not docker_ops.summary_of(main)["running"]:
            result["error"] = f"{main.name} is not running"
            return
        result["stats"] = await call(docker_ops.stats_view, main)
    elif params.operation == "restart":
        timeout = int(target.spec.config.get("stop_timeout_seconds") or 10)
        await call(main.restart, timeout=timeout)
        result["restarted"] = True
        await ctx.log(f"{target.spec.name}: restarted {main.name}")
        if params.wait_healthy_seconds > 0:
            healthy, detail = await driver.wait_until_healthy(
                main, target.spec, params.wait_healthy_seconds
            )
            result["healthy"] = healthy
            result["detail"] = scrubber.text(detail)
        await call(main.reload)
        result["containers"][0] = docker_ops.summary_of(main)


def _thread(driver: Any) -> Any:
    """Runs an SDK call in a thread; engine errors become :class:`DriverError`."""
    # The SDK is loaded by workers only (the API registers this action, never runs it).
    from docker.errors import APIError, DockerException

    async def call(function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except (DockerException, OSError) as exc:
            text = str(exc.explanation) if isinstance(exc, APIError) else str(exc)
            raise DriverError(f"Docker engine error: {text[:400]}") from None

    return call


async def _prune(
    params: DockerParams, ctx: StepContext, targets: list[_Target], scrubber: Scrubber
) -> StepOutcome:
    engines: dict[Any, _Target] = {}
    for target in targets:
        key = target.engine
        engines.setdefault(key, target)
    results: list[dict[str, Any]] = []
    lines: list[str] = []
    for target in engines.values():
        result: dict[str, Any] = {"engine": target.engine_label}
        driver = _driver(ctx, target)
        try:
            client = await driver.client()
            result.update(
                await _thread(driver)(docker_ops.prune_images, client, all_unused=params.all_unused)
            )
        except DriverError as exc:
            result["error"] = scrubber.text(str(exc))
        results.append(result)
        lines.append(
            f"{result['engine']}: {result['error']}"
            if "error" in result
            else f"{result['engine']}: {result['images_deleted']} image(s) deleted, "
            f"{result['untagged']} tag(s) removed, "
            f"{result['space_reclaimed_bytes'] / 1e6:.1f} MB reclaimed"
        )
        await ctx.log(lines[-1])
    failed = [r for r in results if "error" in r]
    summary = (
        f"prune of {'unused' if params.all_unused else 'dangling'} images on "
        f"{len(results)} engine(s): "
        + (
            f"{len(failed)} failed"
            if failed
            else f"{sum(r['images_deleted'] for r in results)} deleted"
        )
    )
    data = {
        "summary": summary,
        "environment": params.environment,
        "operation": "prune",
        "engines": results,
    }
    if failed:
        return StepOutcome(
            StepStatus.FAILURE, "\n".join(lines), Level.CRITICAL, data, error=failed[0]["error"]
        )
    return StepOutcome(StepStatus.SUCCESS, "\n".join(lines), Level.OK, data)


def _line(operation: str, result: dict[str, Any]) -> str:
    name = f"{result['service']} ({result['engine']})"
    if "error" in result and operation != "health":
        return f"{name}: {result['error']}"
    containers = result.get("containers") or []
    states = ", ".join(
        f"{c['name']} {c['status']}" + (f"/{c['health']}" if c["health"] else "")
        for c in containers
    )
    if operation == "ps":
        return f"{name}: {states or 'no container'}"
    if operation == "health":
        if "error" in result:
            return f"{name}: {result['error']}"
        return f"{name}: {'healthy' if result['healthy'] else 'unhealthy'}: {result['detail']}"
    if operation == "logs":
        return f"{name}: {len(result['lines'])} line(s) of {result['container']}" + (
            f" ({result['matched']} matching of {result['scanned']})" if "matched" in result else ""
        )
    if operation == "restart":
        if "healthy" not in result:
            return f"{name}: restarted {result['container']} (health not awaited)"
        state = "healthy" if result["healthy"] else "NOT healthy"
        return f"{name}: restarted {result['container']}, {state}: {result['detail']}"
    return f"{name}: {operation} of {result.get('container')}"


def _outcome(params: DockerParams, results: list[dict[str, Any]], lines: list[str]) -> StepOutcome:
    errors = [r for r in results if "error" in r]
    unhealthy = [r for r in results if r.get("healthy") is False]
    not_running = [
        r for r in results for c in r.get("containers") or [] if c["name"] and not c["running"]
    ]
    failed = bool(errors or unhealthy) and params.operation in ("restart", "health")
    failed = failed or (bool(errors) and len(errors) == len(results))
    level = (
        Level.CRITICAL
        if failed
        else Level.WARNING
        if errors or unhealthy or not_running
        else Level.OK
    )
    if failed:
        what = "; ".join(_line(params.operation, r) for r in (errors + unhealthy)[:3])
        summary = f"docker {params.operation} in {params.environment}: {what}"
    else:
        summary = (
            f"docker {params.operation} in {params.environment}: "
            f"{len(results)} service(s)" + (f", {len(errors)} with errors" if errors else "")
        )
    data = {
        "summary": summary[:500],
        "environment": params.environment,
        "operation": params.operation,
        "services": results,
    }
    output = "\n".join(lines)
    if failed:
        return StepOutcome(StepStatus.FAILURE, output, level, data, error=summary[:500])
    return StepOutcome(StepStatus.SUCCESS, output, level, data)


def _failed(params: DockerParams, message: str, problem: str) -> StepOutcome:
    summary = f"docker {params.operation} in {params.environment}: {message}"
    return StepOutcome(
        StepStatus.FAILURE,
        message,
        Level.CRITICAL,
        {"summary": summary, "problem": problem, "operation": params.operation},
        error=message,
    )


def register(registry: Registry) -> None:
    registry[ACTIONS].add("docker", Action(DockerParams, docker_step, idempotent=False))
