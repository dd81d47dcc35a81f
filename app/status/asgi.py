"""The public status at the edge of the application:

- a plain ``GET`` of a status document (no query string) is answered here from the
  cache, without the routing and dependencies of the API: the page the public reloads
  during an incident costs about what a bare ``/health`` does. It sits inside the
  request-context middleware (:mod:`app.core.middleware`), so its answers carry the
  ``X-Request-ID`` (the client's, or a new one), and are logged and counted under their
  path like any other. Anything else (a query, another method, an error) goes on to the
  FastAPI routes, which answer it the same way or with a problem.
- CORS for these paths only: any origin may read them (GET, and ``If-None-Match`` for
  revalidation); every other route stays same-origin. A preflight asking for another
  method or header is refused with a problem (400, ``/problems/cors-preflight-refused``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.context import AppContext
from app.core.errors import PROBLEM_BASE, BadRequest, problem_response
from app.status.http import API, PAGE, PATHS, answer, cache_of

logger = logging.getLogger(__name__)


class PreflightRefused(BadRequest):
    """A CORS preflight for a method or header the public status does not allow."""

    type = PROBLEM_BASE + "cors-preflight-refused"
    title = "CORS preflight refused"


@dataclass(frozen=True)
class _Template:
    """What the request-context middleware reads of ``scope["route"]``: its path (the
    metrics label), here the document's own path, like its FastAPI route's."""

    path: str


_TEMPLATES = {path: _Template(path) for path in PATHS}


def is_public_status(path: str) -> bool:
    return path == PAGE or path.startswith(API + "/")


def _is_preflight(scope: Scope, headers: Headers) -> bool:
    return (
        scope["method"] == "OPTIONS"
        and "origin" in headers
        and "access-control-request-method" in headers
    )


class PublicStatus:
    """Middleware inside the request context: the direct path, and Starlette's
    ``CORSMiddleware`` for the public status paths (its refusals as problems)."""

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
            await self._preflight(scope, headers)(scope, receive, send)
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
        # The request-context middleware labels its metrics with the route's template.
        scope["route"] = _TEMPLATES[scope["path"]]
        await send({"type": "http.response.start", "status": result.status, "headers": headers})
        await send({"type": "http.response.body", "body": result.content})
        return True
