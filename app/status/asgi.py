"""The public status at the edge of the application:

- a plain ``GET`` of a status document (no query string) is answered here from the
  cache, without the routing, dependencies and request log of the API: the page the
  public reloads during an incident costs about what a bare ``/health`` does. It is
  still counted in the request metrics under its path. Anything else (a query, another
  method, an error) goes on to the FastAPI routes, which answer it the same way or with a
  problem.
- CORS for these paths only: any origin may read them (GET, and ``If-None-Match`` for
  revalidation); every other route stays same-origin.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.context import AppContext
from app.status.http import API, PAGE, PATHS, answer, cache_of

logger = logging.getLogger(__name__)


def is_public_status(path: str) -> bool:
    return path == PAGE or path.startswith(API + "/")


class PublicStatus:
    """Outermost middleware: the direct path, and Starlette's ``CORSMiddleware`` for the
    public status paths."""

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
        await self.cors(scope, receive, send)

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
        await send({"type": "http.response.start", "status": result.status, "headers": headers})
        await send({"type": "http.response.body", "body": result.content})
        context.metrics.observe_request(
            "GET", scope["path"], result.status, time.perf_counter() - started
        )
        return True
