"""``Idempotency-Key`` on creating POSTs (exercised on ``POST /v1/tokens``)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from app.auth.models import ApiToken
from app.auth.roles import Role
from app.context import AppContext
from app.idempotency import IdempotencyRecord
from tests.factories import IssuedToken, issue_token


@pytest.fixture
async def admin(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.ADMIN)


async def token_count(context: AppContext) -> int:
    async with context.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(ApiToken)) or 0)


def keyed(admin: IssuedToken, key: str) -> dict[str, str]:
    return {**admin.headers, "Idempotency-Key": key}


class TestReplay:
    async def test_same_key_same_body_replays_byte_for_byte(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        body = {"name": "ci", "role": "deployer"}
        first = await client.post("/v1/tokens", json=body, headers=keyed(admin, "k-1"))
        again = await client.post("/v1/tokens", json=body, headers=keyed(admin, "k-1"))
        assert first.status_code == again.status_code == 201
        assert again.content == first.content
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["content-type"] == first.headers["content-type"]
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert await token_count(context) == 2  # the admin and one created token

    async def test_json_whitespace_and_key_order_do_not_matter(
        self, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        headers = {**keyed(admin, "k-2"), "content-type": "application/json"}
        first = await client.post(
            "/v1/tokens", content=b'{"name":"a","role":"viewer"}', headers=headers
        )
        again = await client.post(
            "/v1/tokens", content=b'{ "role": "viewer",  "name": "a" }', headers=headers
        )
        assert again.content == first.content

    async def test_same_key_different_body_is_422(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        await client.post(
            "/v1/tokens", json={"name": "a", "role": "viewer"}, headers=keyed(admin, "k-3")
        )
        other = await client.post(
            "/v1/tokens", json={"name": "b", "role": "viewer"}, headers=keyed(admin, "k-3")
        )
        assert other.status_code == 422
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        assert await token_count(context) == 2

    async def test_keys_are_scoped_to_the_token(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        other_admin = await issue_token(context, Role.ADMIN)
        body = {"name": "a", "role": "viewer"}
        one = await client.post("/v1/tokens", json=body, headers=keyed(admin, "shared"))
        two = await client.post("/v1/tokens", json=body, headers=keyed(other_admin, "shared"))
        assert one.status_code == two.status_code == 201
        assert one.json()["id"] != two.json()["id"]

    async def test_a_4xx_answer_is_replayed_too(
        self, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        body = {"name": "a", "role": "superuser"}
        first = await client.post("/v1/tokens", json=body, headers=keyed(admin, "k-4"))
        again = await client.post("/v1/tokens", json=body, headers=keyed(admin, "k-4"))
        assert first.status_code == again.status_code == 422
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"

    @pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "é"])
    async def test_malformed_key_is_400(
        self, client: httpx.AsyncClient, admin: IssuedToken, key: str
    ) -> None:
        response = await client.post(
            "/v1/tokens",
            json={"name": "a", "role": "viewer"},
            headers={**admin.headers, "Idempotency-Key": key.encode()},
        )
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "/problems/malformed-idempotency-key"

    async def test_stored_response_does_not_hold_the_secret_readably(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        created = await client.post(
            "/v1/tokens", json={"name": "a", "role": "viewer"}, headers=keyed(admin, "k-5")
        )
        secret = created.json()["token"]
        async with context.sessionmaker() as session:
            rows = (await session.scalars(select(IdempotencyRecord))).all()
        assert rows
        for row in rows:
            assert secret.encode() not in (row.response_body or b"")
            assert "k-5" not in row.key_hash


class TestConcurrency:
    async def test_in_flight_duplicate_is_409(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        from app.idempotency import _begin, _fingerprint

        body = b'{"name":"a","role":"viewer"}'
        fingerprint = _fingerprint("POST", "/v1/tokens", body)
        await _begin(
            context, admin.id, "k-6", "POST", "/v1/tokens", fingerprint
        )  # first, unfinished
        response = await client.post(
            "/v1/tokens",
            content=body,
            headers={**keyed(admin, "k-6"), "content-type": "application/json"},
        )
        assert response.status_code == 409
        assert response.json()["type"] == "/problems/idempotency-key-in-flight"
        assert response.headers["retry-after"] == "1"

    async def test_200_concurrent_identical_posts_create_one_token(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        body = {"name": "burst", "role": "viewer"}
        responses = await asyncio.gather(
            *(
                client.post("/v1/tokens", json=body, headers=keyed(admin, "burst"))
                for _ in range(200)
            )
        )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {201, 409}, statuses
        created = {r.json()["id"] for r in responses if r.status_code == 201}
        assert len(created) == 1
        assert await token_count(context) == 2
        first = next(
            r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
        )
        for response in responses:
            if response.status_code == 201:
                assert response.content == first.content
        replay = await client.post("/v1/tokens", json=body, headers=keyed(admin, "burst"))
        assert replay.content == first.content
