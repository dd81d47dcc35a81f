from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.auth.roles import Role
from app.core.schemas import PRINTABLE, RequestModel

ENVIRONMENT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
TokenState = Literal["active", "expired", "revoked"]
Finding = Literal["admin", "no_expiry", "unused_90_days", "expired_not_revoked"]


class TokenCreate(RequestModel):
    name: str = Field(min_length=1, max_length=100, pattern=PRINTABLE)
    role: Role
    environment: str | None = Field(
        default=None,
        pattern=ENVIRONMENT_PATTERN,
        description="Restrict the token to one environment.",
    )
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | Literal["never"] = Field(
        default=90,
        description='Days until the token expires (1-3650), or "never" — said explicitly.',
    )


class Token(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    environment: str | None
    state: TokenState
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class TokenCreated(Token):
    token: str = Field(description="The token itself. It is shown this once and never again.")


class TokenList(BaseModel):
    items: list[Token]
    next_cursor: str | None


class ReviewItem(BaseModel):
    token: Token
    findings: list[Finding]


class TokenReview(BaseModel):
    """The runbook's access control audit: tokens that deserve a look."""

    generated_at: dt.datetime
    unused_days: int
    items: list[ReviewItem]
