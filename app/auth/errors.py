"""Authentication and authorisation problems."""

from __future__ import annotations

from app.core.errors import AppError, BadRequest


class Unauthenticated(AppError):
    type = "/problems/unauthenticated"
    title = "Authentication required"
    status = 401

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        challenge = 'Bearer realm="formula-ops"'
        if error:
            challenge += f', error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(AppError):
    type = "/problems/forbidden"
    title = "Insufficient permissions"
    status = 403


class TooManyRequests(AppError):
    type = "/problems/too-many-requests"
    title = "Too many requests"
    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class TokenInQuery(BadRequest):
    type = "/problems/token-in-query"
    title = "Credentials in the query string"
