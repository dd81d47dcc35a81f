"""``Idempotency-Key`` on creating POSTs (exercised on ``POST /v1/tokens``)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import replace

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text

from app.auth.deps import Admin
from app.auth.models import ApiToken
from app.auth.roles import Role
from app.core.context import AppContext
from app.core.deps import UnitOfWorkDep
from app.idempotency.deps import IdempotencyDep
from app.idempotency.models import IdempotencyRecord
from app.idempotency.service import begin
from app.main import create_app
from app.tokens import service as token_service
from app.tokens.schemas import TokenCreate
from tests.factories import IssuedToken, issue_token


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

    async def test_a_body_nested_too_deep_to_fingerprint_is_not_a_500(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        """A route without a body model (rollback) still fingerprints whatever was sent;
        JSON nested past the parser's recursion limit is fingerprinted as bytes."""
        deployer = await issue_token(context, Role.DEPLOYER)
        nested = b"[" * 100_000 + b"]" * 100_000
        response = await client.post(
            "/v1/deployments/0000000000000000/rollback",
            content=nested,
            headers={
                **keyed(deployer, "k-deep"),
                "Content-Type": "application/json",
            },
        )
        assert response.status_code == 404, response.text

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
    async def test_a_duplicate_of_a_request_inside_its_transaction_creates_nothing(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        """The first holds its key row uncommitted. On PostgreSQL the duplicate waits on
        that row briefly, then answers 409; on SQLite writers take turns, so it waits
        for the first to commit and replays it."""
        body = b'{"name":"a","role":"viewer"}'
        headers = {**keyed(admin, "k-6"), "content-type": "application/json"}
        async with context.unit_of_work() as uow:
            first = await begin(context, admin.id, "k-6", "POST", "/v1/tokens", body)
            await first.claim(uow)
            duplicate = asyncio.create_task(
                client.post("/v1/tokens", content=body, headers=headers)
            )
            if not context.settings.uses_sqlite:
                response = await duplicate
                assert response.status_code == 409
                assert response.json()["type"] == "/problems/idempotency-key-in-flight"
                assert response.headers["retry-after"] == "1"
                # Other keys do not wait on it.
                other = await client.post(
                    "/v1/tokens", content=body, headers={**headers, "Idempotency-Key": "k-6b"}
                )
                assert other.status_code == 201
            stored = JSONResponse({"first": True}, status_code=201)
            await first.complete(uow.session, stored)
        if context.settings.uses_sqlite:
            response = await duplicate
            assert response.status_code == 201
            assert response.json() == {"first": True}
            assert response.headers["idempotent-replayed"] == "true"
        # The admin, and on PostgreSQL the other key's token: the duplicate wrote nothing.
        assert await token_count(context) == (1 if context.settings.uses_sqlite else 2)

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


class TestSealing:
    async def test_a_guessed_key_and_the_database_row_do_not_unseal_a_token(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        body = {"name": "ci", "role": "deployer"}
        created = await client.post(
            "/v1/tokens", json=body, headers=keyed(admin, "create-ci-token")
        )
        assert created.status_code == 201
        async with context.sessionmaker() as session:
            row = (await session.scalars(select(IdempotencyRecord))).one()
        assert row.response_body is not None
        nonce, sealed = row.response_body[:12], row.response_body[12:]
        key = b"create-ci-token"
        info = b"formula-ops idempotent response"
        # What a reader of the database can derive from the row and the guessed key.
        for derived in (
            HKDF(SHA256(), 32, salt=row.token_id.encode(), info=info).derive(key),
            HKDF(SHA256(), 32, salt=None, info=info + b"\n" + row.token_id.encode()).derive(key),
            hashlib.sha256(key).digest(),
        ):
            with pytest.raises(InvalidTag):
                AESGCM(derived).decrypt(nonce, sealed, None)
        # The server, holding its secret, still replays it.
        again = await client.post("/v1/tokens", json=body, headers=keyed(admin, "create-ci-token"))
        assert again.content == created.content

    async def test_another_server_secret_answers_a_problem_not_the_response(
        self, client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
    ) -> None:
        body = {"name": "ci", "role": "deployer"}
        created = await client.post("/v1/tokens", json=body, headers=keyed(admin, "k-7"))
        assert created.status_code == 201
        other = replace(context, secret_key=secrets.token_urlsafe(48).encode())
        transport = httpx.ASGITransport(app=create_app(other.settings, context=other))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            again = await http.post("/v1/tokens", json=body, headers=keyed(admin, "k-7"))
        assert again.status_code == 409
        assert again.json()["type"] == "/problems/idempotent-response-unreadable"
        assert created.json()["token"] not in again.text
        assert await token_count(context) == 2


class TestAfterTheCommit:
    async def test_a_failure_after_the_commit_answers_the_stored_response(
        self, context: AppContext, admin: IssuedToken
    ) -> None:
        """The change and its key committed, then the database refused a statement: the
        answer is the stored response (not a 5xx saying nothing was changed), and the
        key is kept."""
        app = create_app(context.settings, context=context)

        @app.post("/v1/tokens-then-fail", status_code=201)
        async def create_then_fail(
            principal: Admin, uow: UnitOfWorkDep, idem: IdempotencyDep
        ) -> JSONResponse:
            async with uow:
                await idem.claim(uow)
                token, _ = await token_service.create(
                    uow, principal, TokenCreate(name="after", role=Role.VIEWER)
                )
                response = JSONResponse({"id": token.id}, status_code=201)
                await idem.complete(uow.session, response)
            async with context.sessionmaker() as session:
                await session.execute(text("SELECT * FROM no_such_table"))
            return response

        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = await http.post("/v1/tokens-then-fail", headers=keyed(admin, "k-8"))
            again = await http.post("/v1/tokens-then-fail", headers=keyed(admin, "k-8"))
        assert first.status_code == 201, first.text
        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert await token_count(context) == 2
