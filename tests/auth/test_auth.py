"""Authentication and its failures: 401, 403, 429, tokens in URLs."""

from __future__ import annotations

import datetime as dt
import random
import string

import httpx
import pytest
from fastapi import FastAPI

from app.auth.roles import Role
from app.auth.secrets import new_token, new_token_id, parse_token
from app.core.context import AppContext
from app.main import create_app
from tests.factories import app_with, issue_token, set_token_times
from tests.helpers import fresh_window


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    return body


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the service logged (the test's own HTTP client logs its URLs: left out)."""
    return "\n".join(
        r.getMessage() + str(r.exc_info or "") for r in caplog.records if r.name != "httpx"
    )


class TestTokenFormat:
    def test_round_trip(self) -> None:
        token_id = new_token_id()
        value, secret = new_token(token_id)
        parsed = parse_token(value)
        assert parsed is not None
        assert (parsed.token_id, parsed.secret) == (token_id, secret)

    def test_every_single_character_typo_is_caught_by_the_checksum(self) -> None:
        value, _ = new_token(new_token_id())
        alphabet = string.ascii_letters + string.digits
        for position in range(5, len(value)):
            if value[position] == "_":
                continue
            typo = (
                value[:position]
                + random.choice(alphabet.replace(value[position], ""))
                + value[position + 1 :]
            )
            assert parse_token(typo) is None, position

    def test_ids_sort_by_creation(self) -> None:
        first = new_token_id()
        later = [new_token_id() for _ in range(5)]
        assert all(first[:9] <= other[:9] for other in later)


class TestAuthentication:
    async def test_missing_token_is_401_with_challenge(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/tokens")
        body = _problem(response, 401)
        assert body["type"] == "/problems/unauthenticated"
        assert response.headers["www-authenticate"] == 'Bearer realm="formula-ops"'

    async def test_non_bearer_scheme_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/tokens", headers={"Authorization": "Basic YTpi"})
        _problem(response, 401)

    async def test_valid_token_is_accepted(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        token = await issue_token(context, Role.ADMIN)
        response = await client.get("/v1/tokens", headers=token.headers)
        assert response.status_code == 200, response.text

    async def test_expired_token_is_refused_on_its_next_request(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        token = await issue_token(context, Role.ADMIN)
        assert (await client.get("/v1/tokens", headers=token.headers)).status_code == 200
        await set_token_times(
            context, token.id, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        )
        response = await client.get("/v1/tokens", headers=token.headers)
        body = _problem(response, 401)
        assert body["detail"] == "The bearer token is expired"
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    async def test_revoked_token_is_refused_on_its_next_request(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        admin = await issue_token(context, Role.ADMIN)
        victim = await issue_token(context, Role.VIEWER)
        assert (await client.get("/v1/audit-events", headers=victim.headers)).status_code == 200
        revoked = await client.delete(f"/v1/tokens/{victim.id}", headers=admin.headers)
        assert revoked.status_code == 200
        assert revoked.json()["state"] == "revoked"
        body = _problem(await client.get("/v1/audit-events", headers=victim.headers), 401)
        assert body["detail"] == "The bearer token is revoked"

    async def test_thousand_random_truncated_expired_revoked_tokens_are_all_refused(
        self, context: AppContext
    ) -> None:
        app = app_with(context, auth_failures_per_minute=10_000)
        real = await issue_token(context, Role.ADMIN)
        expired = await issue_token(context, Role.ADMIN)
        await set_token_times(
            context, expired.id, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        )
        revoked = await issue_token(context, Role.ADMIN)
        await set_token_times(context, revoked.id, revoked_at=dt.datetime.now(dt.UTC))

        rng = random.Random(2026)
        alphabet = string.ascii_letters + string.digits + "_-."
        candidates: list[str] = []
        for i in range(1000):
            kind = i % 5
            if kind == 0:  # random garbage
                candidates.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))))
            elif kind == 1:  # a real token, truncated
                candidates.append(real.value[: rng.randint(1, len(real.value) - 1)])
            elif kind == 2:  # well-formed (valid checksum) but unknown
                candidates.append(new_token(new_token_id())[0])
            elif kind == 3:  # a real id with another secret
                candidates.append(new_token(real.id)[0])
            else:
                candidates.append(rng.choice([expired.value, revoked.value]))
        accepted = 0
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for candidate in candidates:
                response = await http.get(
                    "/v1/tokens", headers={"Authorization": f"Bearer {candidate}"}
                )
                assert response.status_code in (400, 401), response.text
                accepted += response.status_code < 300
            assert (await http.get("/v1/tokens", headers=real.headers)).status_code == 200
        assert accepted == 0


class TestForbidden:
    async def test_insufficient_role_is_403(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        viewer = await issue_token(context, Role.VIEWER)
        body = _problem(await client.get("/v1/tokens", headers=viewer.headers), 403)
        assert body["type"] == "/problems/forbidden"
        assert "admin" in str(body["detail"])

    async def test_environment_restricted_token_cannot_use_global_routes(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        staging_admin = await issue_token(context, Role.ADMIN, environment="staging")
        body = _problem(await client.get("/v1/tokens", headers=staging_admin.headers), 403)
        assert "staging" in str(body["detail"])


class TestCredentialsInTheUrl:
    @pytest.mark.parametrize(
        "query", ["access_token=abc", "token=abc", "api_key=x", "q=fops_0123456789abcdef_x"]
    )
    async def test_refused_with_400(
        self, client: httpx.AsyncClient, query: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        response = await client.get(f"/v1/tokens?{query}")
        body = _problem(response, 400)
        assert body["type"] == "/problems/token-in-query"
        assert query.split("=")[1] not in server_log(caplog)

    async def test_real_token_in_url_is_never_logged(
        self, client: httpx.AsyncClient, context: AppContext, caplog: pytest.LogCaptureFixture
    ) -> None:
        token = await issue_token(context, Role.ADMIN)
        with caplog.at_level("DEBUG"):
            response = await client.get("/health", params={"access_token": token.value})
        assert response.status_code == 400
        assert token.value not in server_log(caplog)
        assert token.value not in response.text


class TestRateLimits:
    async def test_brute_force_from_one_address_gets_429(self, context: AppContext) -> None:
        await fresh_window(needed=10)  # the eleven requests in one fixed window
        app: FastAPI = create_app(context.settings, context=context)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for _ in range(10):
                bad = await http.get("/v1/tokens", headers={"Authorization": "Bearer nope"})
                assert bad.status_code == 401
            blocked = await http.get("/v1/tokens", headers={"Authorization": "Bearer nope"})
            body = _problem(blocked, 429)
            assert body["type"] == "/problems/too-many-requests"
            assert 1 <= int(blocked.headers["retry-after"]) <= 60
        other = httpx.ASGITransport(app=app, client=("203.0.113.8", 5000))
        async with httpx.AsyncClient(transport=other, base_url="http://t") as http:
            response = await http.get("/v1/tokens", headers={"Authorization": "Bearer nope"})
            assert response.status_code == 401  # another address is not blocked

    async def test_per_token_request_limit(self, context: AppContext) -> None:
        await fresh_window(needed=10)  # the six requests in one fixed window
        app = app_with(context, token_requests_per_minute=5)
        token = await issue_token(context, Role.VIEWER)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for _ in range(5):
                ok = await http.get("/v1/audit-events", headers=token.headers)
                assert ok.status_code == 200
            limited = await http.get("/v1/audit-events", headers=token.headers)
            _problem(limited, 429)
            assert int(limited.headers["retry-after"]) >= 1

    async def test_last_used_at_is_recorded(
        self, client: httpx.AsyncClient, context: AppContext
    ) -> None:
        admin = await issue_token(context, Role.ADMIN)
        before = (await client.get(f"/v1/tokens/{admin.id}", headers=admin.headers)).json()
        assert before["last_used_at"] is not None
