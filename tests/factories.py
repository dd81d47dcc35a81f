"""Small builders that write through the real services."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any, Literal

from fastapi import FastAPI
from sqlalchemy import update

from app.auth.models import ApiToken
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.context import AppContext
from app.main import create_app
from app.tokens import service as token_service
from app.tokens.schemas import TokenCreate

TEST_ACTOR = Principal.system("tests")


@dataclass(frozen=True)
class IssuedToken:
    id: str
    value: str
    role: Role

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}


async def issue_token(
    context: AppContext,
    role: Role = Role.ADMIN,
    *,
    name: str | None = None,
    environment: str | None = None,
    no_expiry: bool = False,
    scope: Literal["alerts"] | None = None,
) -> IssuedToken:
    body = TokenCreate(
        name=name or f"{role.value} for tests",
        role=role,
        environment=environment,
        expires_in_days="never" if no_expiry else 90,
        scope=scope,
    )
    async with context.unit_of_work() as uow:
        token, value = await token_service.create(uow, TEST_ACTOR, body)
    return IssuedToken(token.id, value, role)


async def set_token_times(context: AppContext, token_id: str, **values: dt.datetime | None) -> None:
    """Move a token's timestamps (expiry, last use, creation) as time would."""
    async with context.unit_of_work() as uow:
        await uow.session.execute(update(ApiToken).where(ApiToken.id == token_id).values(**values))


def app_with(context: AppContext, **settings: Any) -> FastAPI:
    """The app on the same database and Redis, with some settings changed."""
    current = context.settings
    changed = replace(context, settings=type(current)(**{**current.model_dump(), **settings}))
    return create_app(changed.settings, context=changed)


def sample_service(port: int, *, order: int = 0, settle: float = 0, **extra: Any) -> dict[str, Any]:
    return {
        "driver": "process",
        "config": {"command": ["{python}", "-m", "app.embedded.sample_service"], "port": port},
        "health_url": f"http://127.0.0.1:{port}/health",
        "health_timeout_seconds": 10,
        "deploy_order": order,
        "settle_seconds": settle,
        "smoke_tests": [{"name": "home", "type": "http", "url": f"http://127.0.0.1:{port}/"}],
        **extra,
    }
