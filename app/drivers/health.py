"""The health probe drivers share: GET the health URL, read the version it reports."""

from __future__ import annotations

import asyncio
import functools
import ssl
import time

import httpx

from app.drivers.base import HealthResult, LogLine


@functools.cache
def _tls() -> ssl.SSLContext:
    """Built once: a new client would otherwise load the CA bundle on every probe."""
    return ssl.create_default_context()


async def probe(url: str, timeout: float = 5.0) -> HealthResult:  # noqa: ASYNC109
    """One GET of ``url``: healthy on a 2xx; the version from a JSON ``version`` field."""
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False, verify=_tls()) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return HealthResult(False, detail=f"unreachable: {type(exc).__name__}")
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    version = None
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("version"), str):
            version = body["version"]
    except ValueError:
        pass
    return HealthResult(
        200 <= response.status_code < 300,
        version,
        response.status_code,
        latency_ms,
        f"GET {url} -> {response.status_code} in {latency_ms} ms",
    )


async def wait_healthy(
    url: str,
    *,
    version: str | None,
    timeout: float,  # noqa: ASYNC109
    log: LogLine | None = None,
    interval: float = 0.2,
) -> HealthResult:
    """Probe until healthy (and reporting ``version`` when the service reports one) or
    ``timeout`` seconds passed; returns the last probe."""
    deadline = time.monotonic() + timeout
    last = HealthResult(False, detail="not probed")
    while True:
        last = await probe(url, timeout=min(5.0, max(0.5, timeout)))
        if last.healthy and (version is None or last.version in (None, version)):
            return last
        if time.monotonic() >= deadline:
            if log is not None:
                await log(f"not healthy after {timeout:g} s: {last.detail}")
            return last
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, 2.0)
