"""Token rules: create (secret returned once), revoke, list, review; all audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.models import ApiToken
from app.auth.principal import Principal
from app.auth.secrets import TOKEN_ID, hash_secret, new_token, new_token_id
from app.core.db import UnitOfWork, utcnow
from app.core.errors import NotFound
from app.core.pagination import CursorParams, paginate
from app.tokens.schemas import Finding, TokenCreate

UNUSED_DAYS = 90


class TokenNotFound(NotFound):
    type = "/problems/token-not-found"
    title = "Token not found"


async def create(uow: UnitOfWork, principal: Principal, body: TokenCreate) -> tuple[ApiToken, str]:
    """A new token; returns it and the token string, which is never stored."""
    token_id = new_token_id()
    value, secret = new_token(token_id)
    now = utcnow()
    days = body.expires_in_days
    expires_at = None if days == "never" else now + dt.timedelta(days=days)
    token = ApiToken(
        id=token_id,
        name=body.name,
        role=body.role.value,
        environment=body.environment,
        scope=body.scope,
        secret_hash=hash_secret(secret),
        created_at=now,
        created_by=principal.actor,
        expires_at=expires_at,
    )
    uow.session.add(token)
    await uow.session.flush()
    await audit_service.record(
        uow.session,
        principal,
        action="token.create",
        resource_type="token",
        resource_id=token.id,
        summary={
            "name": body.name,
            "role": body.role.value,
            "environment": body.environment,
            "scope": body.scope,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return token, value


async def get(session: AsyncSession, token_id: str) -> ApiToken:
    token = await session.get(ApiToken, token_id) if TOKEN_ID.match(token_id) else None
    if token is None:
        raise TokenNotFound(f"No token {token_id!r}")
    return token


async def revoke(uow: UnitOfWork, principal: Principal, token_id: str) -> ApiToken:
    """Revoke a token (again: a no-op that is still audited); effective on its next request."""
    token = await get(uow.session, token_id)
    already = token.revoked_at is not None
    if not already:
        token.revoked_at = utcnow()
    await audit_service.record(
        uow.session,
        principal,
        action="token.revoke",
        resource_type="token",
        resource_id=token.id,
        summary={"name": token.name, "already_revoked": already},
    )
    await uow.session.flush()
    return token


async def list_page(
    session: AsyncSession, page: CursorParams
) -> tuple[Sequence[ApiToken], str | None]:
    return await paginate(
        session, select(ApiToken), page, created_at=ApiToken.created_at, id=ApiToken.id
    )


def findings(token: ApiToken, now: dt.datetime, *, unused_days: int = UNUSED_DAYS) -> list[Finding]:
    """What deserves a look: an admin token, one without expiry, one expired but not
    revoked, one unused for ``unused_days`` (reported as ``unused_90_days``, the review's
    name for it, whatever the number)."""
    found: list[Finding] = []
    if token.revoked_at is not None:
        return found
    if token.role == "admin":
        found.append("admin")
    if token.expires_at is None:
        found.append("no_expiry")
    elif token.expires_at <= now:
        found.append("expired_not_revoked")
    last_seen = token.last_used_at or token.created_at
    if now - last_seen >= dt.timedelta(days=unused_days):
        found.append("unused_90_days")
    return found


async def review(
    session: AsyncSession, *, unused_days: int = UNUSED_DAYS
) -> list[tuple[ApiToken, list[Finding]]]:
    """Unrevoked tokens with at least one finding, oldest first."""
    now = utcnow()
    cutoff = now - dt.timedelta(days=unused_days)
    rows = await session.scalars(
        select(ApiToken)
        .where(ApiToken.revoked_at.is_(None))
        .where(
            or_(
                ApiToken.role == "admin",
                ApiToken.expires_at.is_(None),
                ApiToken.expires_at <= now,
                ApiToken.last_used_at <= cutoff,
                (ApiToken.last_used_at.is_(None) & (ApiToken.created_at <= cutoff)),
            )
        )
        .order_by(ApiToken.created_at, ApiToken.id)
    )
    return [(token, findings(token, now, unused_days=unused_days)) for token in rows]


async def admins(session: AsyncSession) -> list[ApiToken]:
    """Unrevoked admin tokens, oldest first (the runbook's "check admin users")."""
    rows = await session.scalars(
        select(ApiToken)
        .where(ApiToken.revoked_at.is_(None), ApiToken.role == "admin")
        .order_by(ApiToken.created_at, ApiToken.id)
    )
    return list(rows)
