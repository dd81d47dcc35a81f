from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.auth.roles import Role
from app.core.schemas import PRINTABLE, RequestModel

ENVIRONMENT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
TokenState = Literal["active", "expired", "revoked"]
# A capability a token may be limited to: `alerts`, the Alertmanager receiver only.
TokenScope = Literal["alerts"]
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
    scope: TokenScope | None = Field(
        default=None,
        description="Limit the token to one capability, whatever its role: `alerts` may "
        "only post to the Alertmanager receiver (`POST /v1/alerts/alertmanager`) and gets "
        "403 everywhere else. Not combined with `environment`.",
    )

    @model_validator(mode="after")
    def _scope_is_global(self) -> TokenCreate:
        if self.scope is not None and self.environment is not None:
            raise ValueError("a token limited to a scope cannot also be limited to an environment")
        return self


class Token(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    environment: str | None
    scope: TokenScope | None = Field(
        description="The one capability the token is limited to; null: all its role allows."
    )
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
