"""The public status at the edge of the application:

- a plain ``GET`` of a status document (no query string) is answered here from the
  cache, without the routing, dependencies and request log of the API: the page the
  public reloads during an incident costs about what a bare ``/health`` does. Its answer
  carries the ``X-Request-ID`` as every other does (the client's when well formed, else
  a new one) and is counted in the request metrics under its path. It is logged at
  ``DEBUG`` only: an ``INFO`` line per request, redacted and formatted, would halve the
  rate this path is for. Anything else (a query, another method, an error) goes on to
  the FastAPI routes, which answer it the same way or with a problem.
- CORS for these paths only: any origin may read them (GET, and ``If-None-Match`` for
  revalidation); every other route stays same-origin. A preflight asking for another
  method or header is refused with a problem (400, ``/problems/cors-preflight-refused``).
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.context import AppContext
from app.core.errors import PROBLEM_BASE, BadRequest, problem_response
from app.core.ids import new_id
from app.core.logging import escape, log_context
from app.core.metrics import Metrics
from app.core.middleware import UNMATCHED_ROUTE, incoming_request_id
from app.status.http import API, PAGE, PATHS, answer, cache_of

logger = logging.getLogger(__name__)
requests_log = logging.getLogger("app.requests")  # the request log of app.core.middleware


class PreflightRefused(BadRequest):
    """A CORS preflight for a method or header the public status does not allow."""

    type = PROBLEM_BASE + "cors-preflight-refused"
    title = "CORS preflight refused"


def _request_id(scope: Scope) -> str:
    """The request's id, as :mod:`app.core.middleware` gives it (and puts it in the
    request's state, where a problem's ``request_id`` reads it)."""
    request_id = incoming_request_id(scope) or new_id()
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id


def is_public_status(path: str) -> bool:
    return path == PAGE or path.startswith(API + "/")


def _metrics(scope: Scope) -> Metrics | None:
    context: AppContext | None = getattr(scope["app"].state, "context", None)
    return None if context is None else context.metrics


def _is_preflight(scope: Scope, headers: Headers) -> bool:
    return (
        scope["method"] == "OPTIONS"
        and "origin" in headers
        and "access-control-request-method" in headers
    )


class PublicStatus:
    """Outermost middleware: the direct path, and Starlette's ``CORSMiddleware`` for the
    public status paths (its refusals as problems)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["GET"],
            allow_headers=["If-None-Match"],
            expose_headers=["ETag"],
            max_age=86400,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_public_status(scope["path"]):
            await self.app(scope, receive, send)
            return
        plain = scope["method"] == "GET" and not scope["query_string"]
        if plain and scope["path"] in PATHS and await self._direct(scope, send):
            return
        headers = Headers(scope=scope)
        if _is_preflight(scope, headers):
            started = time.perf_counter()
            request_id = _request_id(scope)
            response = self._preflight(scope, headers)
            response.headers["X-Request-ID"] = request_id
            await response(scope, receive, send)
            seconds = time.perf_counter() - started
            status = response.status_code
            metrics = _metrics(scope)
            if metrics is not None:
                metrics.observe_request("OPTIONS", UNMATCHED_ROUTE, status, seconds)
            with log_context(request_id=request_id, actor=None):
                requests_log.info(
                    "OPTIONS %s %s %.1fms",
                    escape(scope["path"]),
                    status,
                    seconds * 1000,
                    extra={"status": status, "duration_ms": round(seconds * 1000, 1)},
                )
            return
        await self.cors(scope, receive, send)

    def _preflight(self, scope: Scope, headers: Headers) -> Response:
        """Starlette's preflight answer; its refusal (plain text) as a problem, with the
        same CORS headers (what is allowed)."""
        response = self.cors.preflight_response(request_headers=headers)
        if response.status_code != PreflightRefused.status:
            return response
        kept = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        refused = bytes(response.body).decode("utf-8", "replace")
        return problem_response(
            Request(scope),
            type=PreflightRefused.type,
            title=PreflightRefused.title,
            status=PreflightRefused.status,
            detail=f"{refused}: the public status allows GET with If-None-Match only",
            headers=kept,
        )

    async def _direct(self, scope: Scope, send: Send) -> bool:
        """Answer from the cache; False (nothing sent) when the routes must answer."""
        started = time.perf_counter()
        application = scope["app"]
        context: AppContext | None = getattr(application.state, "context", None)
        if context is None:
            return False
        request = Request(scope)
        try:
            result = await answer(
                context,
                cache_of(application),
                scope["path"],
                str(request.base_url),
                Headers(scope=scope).get("if-none-match"),
            )
        except Exception:  # the database is out of reach…: the routes answer a problem
            logger.debug("public status: answered by the routes", exc_info=True)
            return False
        headers = [(k.lower().encode(), v.encode()) for k, v in result.headers.items()]
        if result.status == 200:
            headers.append((b"content-length", str(len(result.content)).encode()))
        request_id = _request_id(scope)
        headers.append((b"x-request-id", request_id.encode()))
        await send({"type": "http.response.start", "status": result.status, "headers": headers})
        await send({"type": "http.response.body", "body": result.content})
        seconds = time.perf_counter() - started
        context.metrics.observe_request("GET", scope["path"], result.status, seconds)
        if requests_log.isEnabledFor(logging.DEBUG):
            with log_context(request_id=request_id, actor=None):
                requests_log.debug("GET %s %s %.1fms", scope["path"], result.status, seconds * 1000)
        return True
