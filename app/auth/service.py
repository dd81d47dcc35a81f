"""Turning a bearer token into a :class:`Principal`, or refusing it."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy import or_, update
from sqlalchemy.exc import SQLAlchemyError

from app.auth.errors import Denial, Forbidden, TooManyRequests, Unauthenticated
from app.auth.models import ApiToken
from app.auth.principal import Principal
from app.auth.ratelimit import RateLimiter
from app.auth.roles import Role
from app.auth.secrets import parse_token, secret_matches
from app.core.context import AppContext
from app.core.db import SharedTransaction, utcnow
from app.core.proxies import client_block

logger = logging.getLogger(__name__)
LAST_USED_PRECISION = dt.timedelta(seconds=60)
# Tokens whose use this process records after their request's transaction: the requests of
# the same token that read the old last_used_at meanwhile do not record it again.
_RECORDING: set[str] = set()


@dataclass(frozen=True)
class RequestInfo:
    method: str
    path: str
    client_address: str | None
    request_id: str | None


def limiter(context: AppContext) -> RateLimiter:
    return RateLimiter(context.redis, context.settings.redis_prefix)


async def authenticate(
    context: AppContext,
    credentials: str | None,
    request: RequestInfo,
    *,
    shared: SharedTransaction | None = None,
) -> Principal:
    """The caller of ``credentials``; 401 (audited) or 429 when refused.

    The credentials are checked first: a valid token is never refused because of other
    clients' failures from the same address (NAT, CI runners, a load balancer). Only a
    request whose credentials fail — or that has none — counts against its address, and
    past ``auth_failures_per_minute`` such requests are answered 429 instead of 401.

    The token is read at every request (a revoked one is refused at once): in the
    request's ``shared`` transaction when it has one, else in a session of its own.
    """
    token = await _token(context, credentials, shared)
    if token is None:
        reason, detail = (
            ("invalid_token", "The bearer token is not valid")
            if credentials
            else ("missing_token", "This operation needs a bearer token")
        )
        await _refuse(
            context,
            None,
            request,
            reason,
            detail,
            error=None if not credentials else "invalid_token",
        )
    now = utcnow()
    principal = _principal(token, request)
    state = token.state(now)
    if state != "active":
        await _refuse(context, principal, request, f"token_{state}", f"The bearer token is {state}")

    used, retry_after = await limiter(context).hit(f"token:{token.id}")
    if used > context.settings.token_requests_per_minute:
        raise TooManyRequests(
            f"Token {token.id} exceeded {context.settings.token_requests_per_minute} "
            "requests per minute",
            retry_after=retry_after,
        )
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        if shared is None:
            await _touch(context, token.id, now)
        elif token.id not in _RECORDING:  # once the request's connection is back in the pool
            token_id = token.id
            _RECORDING.add(token_id)

            async def touch() -> None:
                try:
                    await _touch(context, token_id, now)
                finally:
                    _RECORDING.discard(token_id)

            shared.after_close(touch)
    return principal


async def _token(
    context: AppContext, credentials: str | None, shared: SharedTransaction | None
) -> ApiToken | None:
    """The token ``credentials`` name, when its secret matches (malformed ones are
    refused by their checksum, before any database lookup)."""
    parsed = parse_token(credentials) if credentials else None
    if parsed is None:
        return None
    if shared is not None:
        session = await shared.session()
        token = await session.get(ApiToken, parsed.token_id, populate_existing=True)
        if token is not None:
            session.expunge(token)  # read, not to be written with the change
    else:
        async with context.sessionmaker() as session:
            token = await session.get(ApiToken, parsed.token_id)
    if token is None or not secret_matches(parsed.secret, token.secret_hash):
        return None
    return token


async def _refuse(
    context: AppContext,
    principal: Principal | None,
    request: RequestInfo,
    reason: str,
    detail: str,
    *,
    error: str | None = "invalid_token",
) -> NoReturn:
    """Count a failed authentication against the client's address (an IPv6 client's
    /64, :func:`app.core.proxies.client_block`) and refuse it with its :class:`Denial`
    (audited as the refusal is answered, :mod:`app.audit.refusals`).

    Past the limit the answer is 429; only the first of those per address and window
    carries a denial (``reason: rate_limited``), the others are counted in the
    ``formula_ops_auth_rate_limited`` metric, so a flood cannot fill the audit trail.
    """
    client = client_block(request.client_address)
    limit = context.settings.auth_failures_per_minute
    failures, retry_after = await limiter(context).hit(f"auth-failures:{client}")
    if failures > limit:
        context.metrics.auth_rate_limited.inc()
        raise TooManyRequests(
            "Too many failed authentications from this address; wait and retry",
            retry_after=retry_after,
            denial=_denial(principal, request, "rate_limited") if failures == limit + 1 else None,
        )
    raise Unauthenticated(detail, error=error, denial=_denial(principal, request, reason))


def authorize(
    principal: Principal,
    required: Role,
    *,
    environment_scoped: bool,
    scope: str | None = None,
) -> str | None:
    """Why ``principal`` may not use a route needing ``required``, or None when it may.

    Global resources (tokens, the audit trail, environments) need a token without an
    environment restriction; environment-scoped routes filter by it instead. A token
    limited to a capability (``Principal.scope``) reaches only the routes of that
    capability (``scope``), whatever its role; such a route also takes an unlimited token
    of the ``required`` role.
    """
    if principal.scope is not None:
        if principal.scope != scope:
            return (
                f"the token is limited to the {principal.scope!r} capability; "
                "this operation is not part of it"
            )
        return None
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
    scope: str | None = None,
) -> Principal:
    reason = authorize(principal, required, environment_scoped=environment_scoped, scope=scope)
    if reason is not None:
        raise Forbidden(reason, denial=_denial(principal, request, "insufficient_scope"))
    return principal


def _principal(token: ApiToken, request: RequestInfo) -> Principal:
    return Principal(
        token_id=token.id,
        name=token.name,
        role=Role(token.role),
        environment=token.environment,
        client_address=request.client_address,
        request_id=request.request_id,
        scope=token.scope,
    )


async def _touch(context: AppContext, token_id: str, now: dt.datetime) -> None:
    """Record the token's use (at most once a minute: not when another request, of this
    process or another, recorded it meanwhile); a failure here fails no request."""
    try:
        async with context.unit_of_work() as uow:
            await uow.session.execute(
                update(ApiToken)
                .where(
                    ApiToken.id == token_id,
                    or_(
                        ApiToken.last_used_at.is_(None),
                        ApiToken.last_used_at <= now - LAST_USED_PRECISION,
                    ),
                )
                .values(last_used_at=now)
            )
    except SQLAlchemyError:
        logger.warning("could not record the last use of token %s", token_id)


def _denial(principal: Principal | None, request: RequestInfo, reason: str) -> Denial:
    return Denial(
        principal=principal,
        reason=reason,
        method=request.method,
        path=request.path,
        client_address=request.client_address,
        request_id=request.request_id,
    )
