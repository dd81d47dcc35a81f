"""``/v1/tokens``: create (shown once), list, get, revoke, access review."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from app.auth.roles import Role
from app.auth.secrets import parse_token
from app.core.context import AppContext
from tests.factories import IssuedToken, issue_token, set_token_times


@pytest.fixture
async def admin(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.ADMIN, name="root")


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


class TestCreateToken:
    async def test_secret_is_returned_once_and_works(
        self, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        response = await client.post(
            "/v1/tokens", json={"name": "ci", "role": "deployer"}, headers=admin.headers
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert response.headers["location"] == f"/v1/tokens/{body['id']}"
        parsed = parse_token(body["token"])
        assert parsed is not None
        assert parsed.token_id == body["id"]
        assert body["role"] == "deployer"
        assert body["state"] == "active"
        assert body["created_by"] == f"token:{admin.id}"
        expires = _parse_time(body["expires_at"]) - _parse_time(body["created_at"])
        assert abs(expires - dt.timedelta(days=90)) < dt.timedelta(seconds=5)

        fetched = await client.get(f"/v1/tokens/{body['id']}", headers=admin.headers)
        assert "token" not in fetched.json()
        listed = await client.get("/v1/tokens", headers=admin.headers)
        assert body["token"] not in listed.text
        usable = await client.get(
            "/v1/audit-events", headers={"Authorization": f"Bearer {body['token']}"}
        )
        assert usable.status_code == 200

    async def test_no_expiry_needs_the_explicit_flag(
        self, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        body = {"name": "forever", "role": "viewer", "expires_in_days": "never"}
        response = await client.post("/v1/tokens", json=body, headers=admin.headers)
        assert response.status_code == 201
        assert response.json()["expires_at"] is None

    @pytest.mark.parametrize(
        "payload",
        [
            {"name": "x", "role": "root"},
            {"name": "", "role": "viewer"},
            {"role": "viewer"},
            {"name": "x", "role": "viewer", "expires_in_days": 0},
            {"name": "x", "role": "viewer", "expires_in_days": 3651},
            {"name": "x", "role": "viewer", "expires_in_days": None},
            {"name": "x", "role": "viewer", "expires_in_days": "forever"},
            {"name": "x", "role": "viewer", "expires_at": "2099-01-01T00:00:00Z"},
            {"name": "x", "role": "viewer", "environment": "Bad Env!"},
            {"name": "x", "role": "viewer", "secret_hash": "0" * 64},
        ],
    )
    async def test_invalid_requests_are_422(
        self, client: httpx.AsyncClient, admin: IssuedToken, payload: dict[str, object]
    ) -> None:
        response = await client.post("/v1/tokens", json=payload, headers=admin.headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"]

    async def test_expiry_in_days(self, client: httpx.AsyncClient, admin: IssuedToken) -> None:
        body = {"name": "short", "role": "viewer", "expires_in_days": 5}
        created = (await client.post("/v1/tokens", json=body, headers=admin.headers)).json()
        lifetime = _parse_time(created["expires_at"]) - _parse_time(created["created_at"])
        assert abs(lifetime - dt.timedelta(days=5)) < dt.timedelta(seconds=5)

    async def test_environment_restriction_is_kept(
        self, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        body = {"name": "staging ci", "role": "deployer", "environment": "staging"}
        created = await client.post("/v1/tokens", json=body, headers=admin.headers)
        assert created.json()["environment"] == "staging"


class TestReadAndRevoke:
    async def test_list_is_paginated(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        for _ in range(4):
            await issue_token(context, Role.VIEWER)
        first = (await client.get("/v1/tokens?limit=3", headers=admin.headers)).json()
        second = (
            await client.get(
                "/v1/tokens",
                params={"limit": 3, "cursor": first["next_cursor"]},
                headers=admin.headers,
            )
        ).json()
        ids = [t["id"] for t in first["items"] + second["items"]]
        assert len(ids) == len(set(ids)) == 5
        assert second["next_cursor"] is None

    async def test_unknown_token_is_404(
        self, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        for token_id in ("0000000000000000", "not-a-token-id"):
            response = await client.get(f"/v1/tokens/{token_id}", headers=admin.headers)
            assert response.status_code == 404
            assert response.json()["type"] == "/problems/token-not-found"
            response = await client.delete(f"/v1/tokens/{token_id}", headers=admin.headers)
            assert response.status_code == 404

    async def test_revoke_twice_is_harmless(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        victim = await issue_token(context, Role.VIEWER)
        first = await client.delete(f"/v1/tokens/{victim.id}", headers=admin.headers)
        second = await client.delete(f"/v1/tokens/{victim.id}", headers=admin.headers)
        assert first.status_code == second.status_code == 200
        assert first.json()["revoked_at"] == second.json()["revoked_at"]


class TestAccessReview:
    async def test_review_lists_what_deserves_a_look(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        fine = await issue_token(context, Role.DEPLOYER)
        forever = await issue_token(context, Role.VIEWER, no_expiry=True)
        stale = await issue_token(context, Role.OPERATOR)
        await set_token_times(
            context,
            stale.id,
            created_at=now - dt.timedelta(days=200),
            last_used_at=now - dt.timedelta(days=91),
        )
        expired = await issue_token(context, Role.VIEWER)
        await set_token_times(context, expired.id, expires_at=now - dt.timedelta(days=1))
        gone = await issue_token(context, Role.ADMIN)
        await set_token_times(context, gone.id, revoked_at=now)

        response = await client.get("/v1/tokens/review", headers=admin.headers)
        assert response.status_code == 200
        found = {item["token"]["id"]: item["findings"] for item in response.json()["items"]}
        assert found[admin.id] == ["admin"]
        assert found[forever.id] == ["no_expiry"]
        assert found[stale.id] == ["unused_90_days"]
        assert found[expired.id] == ["expired_not_revoked"]
        assert fine.id not in found
        assert gone.id not in found
