"""One answer for a public status document, whichever way the request came in (the
FastAPI routes of :mod:`app.status.router`, or the direct path of :mod:`app.status.asgi`):
the cached bytes, ``ETag``, ``Cache-Control`` (and ``Vary: Host`` when the page's URL
comes from the request) and CORS headers, or 304."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.context import AppContext
from app.status.cache import Render, StatusCache
from app.status.page import render_page
from app.status.presenters import DOCUMENTS, PageInfo

API = "/api/v2"
PAGE = "/status"
JSON = "application/json"
HTML = "text/html; charset=utf-8"

# Path → (document, media type, renderer).
PATHS: dict[str, tuple[str, str, Render | None]] = {
    **{f"{API}/{name}.json": (name, JSON, None) for name in DOCUMENTS},
    PAGE: ("page.html", HTML, render_page),
}
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "ETag"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    content: bytes


def cache_of(app: Any) -> StatusCache:
    """The process's cache (one per application)."""
    cache: StatusCache | None = getattr(app.state, "status_cache", None)
    if cache is None:
        cache = app.state.status_cache = StatusCache()
    return cache


def page_info(context: AppContext, base_url: str) -> PageInfo:
    settings = context.settings.status
    url = settings.page_url or base_url.rstrip("/") + PAGE
    return PageInfo(name=settings.page_name, url=url)


def matches(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 §13.1.2)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


async def answer(
    context: AppContext, cache: StatusCache, path: str, base_url: str, if_none_match: str | None
) -> Answer:
    name, media_type, render = PATHS[path]
    body = await cache.body(context, page_info(context, base_url), name, render)
    headers = {
        "ETag": body.etag,
        "Cache-Control": f"public, max-age={context.settings.status.max_age_seconds}",
        **CORS_HEADERS,
    }
    if not context.settings.status.page_url:
        # The page's URL (`page.url`, every `shortlink`, the page's links) comes from the
        # request's host: a shared cache must key the answer on it too.
        headers["Vary"] = "Host"
    if matches(if_none_match, body.etag):
        return Answer(304, headers, b"")
    return Answer(200, {**headers, "Content-Type": media_type}, body.content)
