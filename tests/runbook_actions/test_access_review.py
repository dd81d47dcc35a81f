"""``access_review``: the tokens that deserve a look (unused, without expiry, expired but
not revoked, admin) and the admin listing, from tokens created through the tokens
service; never a token's secret or hash."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select

from app.auth.models import ApiToken
from app.auth.roles import Role
from app.core.context import AppContext
from app.core.db import utcnow
from app.runbooks.actions.access import AccessReviewParams, access_review
from app.runs.models import Level, StepStatus
from app.tokens import service as token_service
from tests.factories import TEST_ACTOR, issue_token, set_token_times
from tests.runbook_actions.helpers import step_context


def days_ago(days: float) -> dt.datetime:
    return utcnow() - dt.timedelta(days=days)


async def review(
    context: AppContext, **params: object
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    ctx, _ = step_context(context)
    outcome = await access_review(AccessReviewParams.model_validate(params), ctx)
    assert outcome.status == StepStatus.SUCCESS
    found = {item["name"]: item["findings"] for item in outcome.data["findings"]}
    return found, {"level": outcome.level, "output": outcome.output, **outcome.data}


class TestFindings:
    async def test_each_finding_and_the_admin_listing(self, context: AppContext) -> None:
        admin = await issue_token(context, Role.ADMIN, name="bootstrap")
        await issue_token(context, Role.OPERATOR, name="fresh")
        await issue_token(context, Role.DEPLOYER, name="ci forever", no_expiry=True)
        stale = await issue_token(context, Role.VIEWER, name="stale")
        await set_token_times(
            context, stale.id, created_at=days_ago(200), last_used_at=days_ago(95)
        )
        expired = await issue_token(context, Role.OPERATOR, name="expired")
        await set_token_times(context, expired.id, expires_at=days_ago(1))
        revoked = await issue_token(context, Role.ADMIN, name="revoked", no_expiry=True)
        async with context.unit_of_work() as uow:
            await token_service.revoke(uow, TEST_ACTOR, revoked.id)

        found, data = await review(context)
        assert found == {
            "bootstrap": ["admin"],
            "ci forever": ["no_expiry"],
            "stale": ["unused"],
            "expired": ["expired_not_revoked"],
        }
        assert data["level"] == Level.WARNING
        assert data["counts"] == {
            "unused": 1,
            "no_expiry": 1,
            "expired_not_revoked": 1,
            "admin": 1,
            "flagged": 4,
            "admins": 1,
        }
        [listed] = data["admins"]
        assert (listed["id"], listed["name"], listed["role"]) == (admin.id, "bootstrap", "admin")
        assert listed["last_used_at"] is None

        async with context.sessionmaker() as session:
            hashes = list(await session.scalars(select(ApiToken.secret_hash)))
        shown = json.dumps(data, default=str)
        for token in (admin, stale, expired):
            assert token.value not in shown
            assert token.value.rsplit("_", 1)[-1] not in shown
        assert not any(h in shown for h in hashes)

    async def test_the_unused_days_are_a_parameter(self, context: AppContext) -> None:
        token = await issue_token(context, Role.OPERATOR, name="quiet")
        await set_token_times(context, token.id, created_at=days_ago(40), last_used_at=days_ago(35))
        found, _ = await review(context)
        assert found == {}
        found, data = await review(context, unused_days=30)
        assert found == {"quiet": ["unused"]}
        assert data["unused_days"] == 30
        assert "unused for 30 days" in data["summary"]


class TestLevel:
    async def test_an_admin_token_alone_is_listed_not_a_warning(self, context: AppContext) -> None:
        await issue_token(context, Role.ADMIN, name="bootstrap")
        found, data = await review(context)
        assert found == {"bootstrap": ["admin"]}
        assert data["level"] == Level.OK
        _, data = await review(context, warn_on_admin=True)
        assert data["level"] == Level.WARNING

    async def test_no_token_no_finding(self, context: AppContext) -> None:
        found, data = await review(context)
        assert (found, data["level"], data["admins"]) == ({}, Level.OK, [])
