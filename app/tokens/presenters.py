"""Tokens as clients see them (never their secret, which is not stored)."""

from __future__ import annotations

import datetime as dt

from app.auth.models import ApiToken
from app.core.db import utcnow
from app.tokens.schemas import Token


def token_out(token: ApiToken, now: dt.datetime | None = None) -> Token:
    return Token(
        id=token.id,
        name=token.name,
        role=token.role,
        environment=token.environment,
        scope=token.scope,
        state=token.state(now or utcnow()),
        created_at=token.created_at,
        created_by=token.created_by,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )
