"""What the Idempotency-Key itself can answer, and the replay of a stored response."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.errors import AppError, BadRequest

if TYPE_CHECKING:
    from fastapi.responses import Response


class MalformedIdempotencyKey(BadRequest):
    type = "/problems/malformed-idempotency-key"
    title = "Malformed Idempotency-Key"


class IdempotencyKeyInFlight(AppError):
    type = "/problems/idempotency-key-in-flight"
    title = "Request with this Idempotency-Key in progress"
    status = 409


class IdempotencyKeyReused(AppError):
    type = "/problems/idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"
    status = 422


class IdempotentResponseUnreadable(AppError):
    type = "/problems/idempotent-response-unreadable"
    title = "The stored response to this Idempotency-Key cannot be read"
    status = 409


# Every problem the Idempotency-Key itself can answer, for routes' ``responses=``.
PROBLEMS: tuple[type[AppError], ...] = (
    MalformedIdempotencyKey,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    IdempotentResponseUnreadable,
)


class IdempotentReplay(Exception):
    """Raised to answer with a stored response."""

    def __init__(self, response: Response) -> None:
        self.response = response
