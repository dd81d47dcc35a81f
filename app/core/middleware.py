"""The outermost ASGI layer: request id, body-size limit, metrics, last-resort 500.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses pass through untouched.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.credentials import looks_like_token
from app.core.errors import PROBLEM_MEDIA_TYPE, PayloadTooLarge, TokenInQuery
from app.core.ids import new_id
from app.core.logging import escape, log_context
from app.core.metrics import Metrics
from app.core.proxies import TrustedProxies

logger = logging.getLogger("app.requests")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNMATCHED_ROUTE = "<unmatched>"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds {limit} bytes")


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: Metrics,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.trusted_proxies = trusted_proxies or TrustedProxies()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        _resolve_client(scope, self.trusted_proxies)
        request_id = incoming_request_id(scope) or new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        # Every line logged while handling it carries the request id (and the actor, once
        # the authentication dependency knows it); reset when the request ends.
        with log_context(request_id=request_id, actor=None):
            await self._handle(scope, receive, send_wrapper, request_id, started, status_holder)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send_wrapper: Send,
        request_id: str,
        started: float,
        status_holder: dict[str, Any],
    ) -> None:
        try:
            declared = _content_length(scope)
            if _credentials_in_query(scope):
                await _send_problem(
                    send_wrapper,
                    scope,
                    request_id,
                    status=TokenInQuery.status,
                    type_=TokenInQuery.type,
                    title=TokenInQuery.title,
                    detail="Send credentials in the Authorization header, never in the URL; "
                    "treat the token as exposed and revoke it",
                )
            elif declared is not None and declared > self.max_body_bytes:
                await _send_problem(
                    send_wrapper,
                    scope,
                    request_id,
                    status=PayloadTooLarge.status,
                    type_=PayloadTooLarge.type,
                    title=PayloadTooLarge.title,
                    detail=f"The request body exceeds {self.max_body_bytes} bytes",
                )
            else:
                await self.app(scope, self._limited(receive), send_wrapper)
        except Exception:
            logger.exception(
                "unhandled error in %s %s (request id %s)",
                escape(scope.get("method", "")),
                escape(scope.get("path", "")),
                request_id,
            )
            if not status_holder["started"]:
                await _send_problem(
                    send_wrapper,
                    scope,
                    request_id,
                    status=500,
                    type_="/problems/internal-error",
                    title="Internal server error",
                    detail=(
                        "The server failed to answer this request. "
                        f"Quote request id {request_id} when reporting it."
                    ),
                )
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            seconds = time.perf_counter() - started
            status = int(status_holder["status"])
            method = scope.get("method", "GET")
            self.metrics.observe_request(method, template, status, seconds)
            # The path only (query strings may carry what must never reach a log), and
            # escaped: a client's `%0a` must not start a line of its own.
            logger.info(
                "%s %s %s %.1fms",
                escape(method),
                escape(scope.get("path", "")),
                status,
                seconds * 1000,
                extra={"status": status, "duration_ms": round(seconds * 1000, 1)},
            )

    def _limited(self, receive: Receive) -> Receive:
        limit = self.max_body_bytes
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited_receive


def _resolve_client(scope: Scope, proxies: TrustedProxies) -> None:
    """Behind a trusted proxy, ``scope["client"]`` becomes the forwarded client."""
    if not proxies.networks or not scope.get("client"):
        return
    host = scope["client"][0]
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name == b"x-forwarded-for"
    ]
    client = proxies.client(host, forwarded)
    if client is not None and client != host:
        scope["client"] = (client, 0)


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


_CREDENTIAL_PARAMS = frozenset({"access_token", "token", "api_key", "apikey", "auth"})


def _credentials_in_query(scope: Scope) -> bool:
    raw = scope.get("query_string", b"")
    if not raw:
        return False
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name.lower() in _CREDENTIAL_PARAMS or looks_like_token(value) or looks_like_token(name):
            return True
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_problem(
    send: Send, scope: Scope, request_id: str, *, status: int, type_: str, title: str, detail: str
) -> None:
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": scope.get("path", ""),
        "request_id": request_id,
    }
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(payload)).encode()),
    ]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
