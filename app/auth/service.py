"""Turning a bearer token into a :class:`Principal`, or refusing it."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from app.audit import service as audit_service
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.auth.models import ApiToken
from app.auth.principal import Principal
from app.auth.ratelimit import RateLimiter
from app.auth.roles import Role
from app.auth.secrets import parse_token, secret_matches
from app.context import AppContext
from app.db import utcnow

logger = logging.getLogger(__name__)
LAST_USED_PRECISION = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class RequestInfo:
    method: str
    path: str
    client_address: str | None
    request_id: str | None


def limiter(context: AppContext) -> RateLimiter:
    return RateLimiter(context.redis, context.settings.redis_prefix)


async def authenticate(
    context: AppContext, credentials: str | None, request: RequestInfo
) -> Principal:
    """The caller of ``credentials``; 401 (audited) or 429 when refused."""
    rates = limiter(context)
    client = request.client_address or "unknown"
    failures, retry_after = await rates.count(f"auth-failures:{client}")
    if failures >= context.settings.auth_failures_per_minute:
        raise TooManyRequests(
            "Too many failed authentications from this address; wait and retry",
            retry_after=retry_after,
        )
    if not credentials:
        await _deny(context, None, request, "missing_token", 401)
        raise Unauthenticated("This operation needs a bearer token", error=None)

    parsed = parse_token(credentials)
    token: ApiToken | None = None
    if parsed is not None:
        async with context.sessionmaker() as session:
            token = await session.get(ApiToken, parsed.token_id)
    if parsed is None or token is None or not secret_matches(parsed.secret, token.secret_hash):
        await rates.hit(f"auth-failures:{client}")
        await _deny(context, None, request, "invalid_token", 401)
        raise Unauthenticated("The bearer token is not valid")

    now = utcnow()
    state = token.state(now)
    if state != "active":
        await rates.hit(f"auth-failures:{client}")
        principal = _principal(token, request)
        await _deny(context, principal, request, f"token_{state}", 401)
        raise Unauthenticated(f"The bearer token is {state}")

    principal = _principal(token, request)
    used, retry_after = await rates.hit(f"token:{token.id}")
    if used > context.settings.token_requests_per_minute:
        raise TooManyRequests(
            f"Token {token.id} exceeded {context.settings.token_requests_per_minute} "
            "requests per minute",
            retry_after=retry_after,
        )
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        await _touch(context, token.id, now)
    return principal


def authorize(principal: Principal, required: Role, *, environment_scoped: bool) -> str | None:
    """Why ``principal`` may not use a route needing ``required``, or None when it may.

    Global resources (tokens, the audit trail, environments) need a token without an
    environment restriction; environment-scoped routes filter by it instead.
    """
    if not principal.role.includes(required):
        return (
            f"this operation needs the {required.value} role; the token has {principal.role.value}"
        )
    if not environment_scoped and principal.environment is not None:
        return (
            f"the token is restricted to environment {principal.environment!r}; "
            "this operation is not limited to one environment"
        )
    return None


async def require(
    context: AppContext,
    principal: Principal,
    required: Role,
    request: RequestInfo,
    *,
    environment_scoped: bool = False,
) -> Principal:
    reason = authorize(principal, required, environment_scoped=environment_scoped)
    if reason is not None:
        await _deny(context, principal, request, "insufficient_scope", 403)
        raise Forbidden(reason)
    return principal


def _principal(token: ApiToken, request: RequestInfo) -> Principal:
    return Principal(
        token_id=token.id,
        name=token.name,
        role=Role(token.role),
        environment=token.environment,
        client_address=request.client_address,
        request_id=request.request_id,
    )


async def _touch(context: AppContext, token_id: str, now: dt.datetime) -> None:
    """Record the token's use (at most once a minute); a failure here fails no request."""
    try:
        async with context.unit_of_work() as uow:
            await uow.session.execute(
                update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
            )
    except SQLAlchemyError:
        logger.warning("could not record the last use of token %s", token_id)


async def _deny(
    context: AppContext,
    principal: Principal | None,
    request: RequestInfo,
    reason: str,
    status: int,
) -> None:
    await audit_service.record_denial(
        context.unit_of_work,
        principal,
        reason=reason,
        status=status,
        method=request.method,
        path=request.path,
        client_address=request.client_address,
        request_id=request.request_id,
    )
