"""Authentication and authorisation problems, each with the denial it leaves in the audit
trail.

A refusal carries its :class:`Denial`; :mod:`app.audit.refusals` writes it (``auth.denied``)
when the refusal is answered, so authentication needs nothing from the audit package.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.principal import Principal
from app.core.errors import AppError


@dataclass(frozen=True)
class Denial:
    """What the audit trail records of a refused request (the status is the answer's)."""

    principal: Principal | None
    reason: str
    method: str
    path: str
    client_address: str | None
    request_id: str | None


class Unauthenticated(AppError):
    type = "/problems/unauthenticated"
    title = "Authentication required"
    status = 401

    def __init__(
        self, detail: str, *, error: str | None = "invalid_token", denial: Denial | None = None
    ) -> None:
        challenge = 'Bearer realm="formula-ops"'
        if error:
            challenge += f', error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})
        self.denial = denial


class Forbidden(AppError):
    type = "/problems/forbidden"
    title = "Insufficient permissions"
    status = 403

    def __init__(self, detail: str, *, denial: Denial | None = None) -> None:
        super().__init__(detail)
        self.denial = denial


class TooManyRequests(AppError):
    type = "/problems/too-many-requests"
    title = "Too many requests"
    status = 429

    def __init__(self, detail: str, *, retry_after: int, denial: Denial | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
        self.denial = denial
