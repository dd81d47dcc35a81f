"""One HTTP attempt: POST a signed body to a checked destination and say what happened.

aiohttp, not httpx: one shared ``httpx.AsyncClient`` stalls at a few hundred requests per
second at concurrency 32 (encode/httpx#3215), aiohttp does several thousand
(``bench/bench_webhooks.py`` measures both). The connector resolves names through the
guard (:class:`~app.webhooks.resolver.GuardedResolver`), so a connection only ever goes
to an address checked at that moment; IP-literal URLs are checked before the request.
Redirects are never followed, proxies from the environment never used.

aiohttp is imported with the first request's session, not with this module: every process
builds a :class:`Sender` (the composition root), but the API never sends, and a worker
only once there is something to deliver.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app import __version__
from app.core.db import utcnow
from app.core.redaction import redact_text
from app.core.resources import ResourceKey
from app.core.settings import WebhookSettings
from app.webhooks.guard import AddressGuard, Resolve, UnsafeDestination, refusal_of

if TYPE_CHECKING:
    import aiohttp

EXCERPT_BYTES = 1024
MAX_RETRY_AFTER_SECONDS = 86400.0
USER_AGENT = f"formula-ops-webhooks/{__version__}"


@dataclass(frozen=True)
class AttemptResult:
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None = None
    response_excerpt: str | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def retry_after_seconds(value: str | None, now: dt.datetime) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,12}", value):
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER_SECONDS)


async def _head(content: aiohttp.StreamReader) -> bytes:
    """The first KiB of the body (or all of a shorter one), however it trickles in."""
    raw = b""
    while len(raw) < EXCERPT_BYTES:
        chunk = await content.read(EXCERPT_BYTES - len(raw))
        if not chunk:
            break
        raw += chunk
    return raw


def _excerpt(raw: bytes) -> str | None:
    if not raw:
        return None
    return redact_text(raw[:EXCERPT_BYTES].decode("utf-8", errors="replace"))


class Sender:
    """The process's webhook HTTP client (one connection pool), closed with the context."""

    def __init__(self, settings: WebhookSettings, resolver: Resolve | None = None) -> None:
        self.settings = settings
        self.guard = AddressGuard.from_settings(settings, resolver)
        self._session: aiohttp.ClientSession | None = None

    def use_resolver(self, resolver: Resolve | None) -> None:
        """Resolve names with ``resolver`` (tests stub DNS with it); before the first
        request, as the connection pool keeps the resolver it was built with."""
        if self._session is not None:
            raise RuntimeError("use_resolver() after the first request")
        self.guard = AddressGuard.from_settings(self.settings, resolver)

    async def check(self, url: str) -> None:
        """The creation-time check of a destination: its syntax and scheme, then every
        address its name resolves to now (bounded by the attempt timeout); raises
        :class:`UnsafeDestination`."""
        destination = self.guard.check_url(url)
        if destination.address is not None:
            return
        try:
            async with asyncio.timeout(min(self.settings.timeout_seconds, 5.0)):
                await self.guard.resolve(destination.host, destination.port)
        except TimeoutError:
            raise UnsafeDestination(
                "unresolvable", f"{destination.host} did not resolve in time"
            ) from None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            from app.webhooks.resolver import GuardedResolver

            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.guard),
                # No pool limit: the jobs bound the concurrency (jobs x batch size), and a
                # request waiting for a pooled connection would spend its timeout unsent.
                limit=0,
                ttl_dns_cache=10,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        started = utcnow()
        clock = time.perf_counter()

        def done(**fields: object) -> AttemptResult:
            elapsed = int((time.perf_counter() - clock) * 1000)
            return AttemptResult(started_at=started, duration_ms=elapsed, **fields)  # type: ignore[arg-type]

        try:
            destination = self.guard.check_url(url)
        except UnsafeDestination as exc:
            return done(error=f"refused: {exc}")
        import aiohttp  # imported by the session before any request; here for its errors

        try:
            async with self._client().post(
                destination.url,
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                allow_redirects=False,
            ) as response:
                raw = await _head(response.content)
                status = response.status
                retry_after = (
                    retry_after_seconds(response.headers.get("Retry-After"), utcnow())
                    if status in (429, 503)
                    else None
                )
        except TimeoutError:
            return done(error=f"no response within {self.settings.timeout_seconds:g} s")
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            refusal = refusal_of(exc)
            if refusal is not None:
                return done(error=f"refused: {refusal}")
            if isinstance(exc, aiohttp.ClientConnectorError):
                cause = exc.os_error
                return done(error=f"cannot connect: {cause.strerror or type(cause).__name__}")
            return done(error=f"{type(exc).__name__}: {redact_text(str(exc))[:300]}")
        except ValueError as exc:  # aiohttp refusing what it was given or what it got
            return done(error=f"{type(exc).__name__}: {redact_text(str(exc))[:300]}")
        error = None
        if 300 <= status < 400:
            error = f"redirect ({status}) not followed"
        elif not 200 <= status < 300:
            error = f"HTTP {status}"
        return done(
            status_code=status,
            response_excerpt=_excerpt(raw),
            error=error,
            retry_after=retry_after,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


SENDER: ResourceKey[Sender] = ResourceKey("webhook sender")
