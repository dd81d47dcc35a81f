"""CORS for the public status: any origin may read it (GET, and ``If-None-Match`` for
revalidation), so another site's script can show the status. Only these paths; every
other route stays same-origin."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.status.router import API, PAGE


def is_public_status(path: str) -> bool:
    return path == PAGE or path.startswith(API + "/")


class StatusCORS:
    """Starlette's ``CORSMiddleware`` for the public status paths only."""

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
        if scope["type"] == "http" and is_public_status(scope["path"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
