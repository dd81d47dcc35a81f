"""The failed-authentication limiter: who the client is (spoofed ``X-Forwarded-For``,
trusted proxies), a shared address, requests without a token, the audit rows it writes,
and a flood of bad requests that cannot hold up valid ones. The address tests run
against a live uvicorn on 127.0.0.1 configured as ``formula-ops api`` configures it."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from app.audit.models import AuditEvent
from app.auth.roles import Role
from app.auth.secrets import new_token, new_token_id
from app.core.context import AppContext
from app.core.proxies import TrustedProxies
from app.main import create_app
from tests.factories import app_with, issue_token
from tests.helpers import audit_events_after, fresh_window, live, raw_get
from tests.helpers import last_audit_seq as last_seq

# The limiter's counters and audit rows are the same on either database: PostgreSQL here.
pytestmark = pytest.mark.one_backend("postgres")

LIMIT = 10  # the default auth_failures_per_minute


def http(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=120)


async def denials_after(context: AppContext, seq: int) -> list[AuditEvent]:
    return await audit_events_after(context, seq, action="auth.denied")


BAD = {"Authorization": "Bearer fops_not_a_token"}


def rate_limited(context: AppContext) -> float:
    """The ``formula_ops_auth_rate_limited`` counter: 429s of the address limit."""
    value = context.metrics.registry.get_sample_value("formula_ops_auth_rate_limited_total")
    return value or 0.0


class TestForwardedFor:
    async def test_without_trusted_proxies_the_header_is_ignored(self, context: AppContext) -> None:
        await fresh_window()
        start = await last_seq(context)
        app = create_app(context.settings, context=context)
        async with live(app, context) as url, http(url) as client:
            for i in range(LIMIT):
                spoofed = {**BAD, "X-Forwarded-For": f"198.51.100.{i + 1}"}
                response = await client.get("/v1/tokens", headers=spoofed)
                assert response.status_code == 401, response.text
            rotated = await client.get(
                "/v1/tokens", headers={**BAD, "X-Forwarded-For": "198.51.100.200"}
            )
            assert rotated.status_code == 429  # the limit counts the real peer
        denials = await denials_after(context, start)
        assert [e.summary["reason"] for e in denials] == ["invalid_token"] * LIMIT + [
            "rate_limited"
        ]
        assert {e.client_address for e in denials} == {"127.0.0.1"}

    async def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client(
        self, context: AppContext
    ) -> None:
        await fresh_window()
        app = app_with(context, trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
        start = await last_seq(context)
        async with live(app, context) as url, http(url) as client:
            for i in range(LIMIT):
                # a client-written (spoofed) entry, the client, then a trusted hop
                chain = f"203.0.113.{i + 1}, 198.51.100.7, 10.1.2.3"
                response = await client.get("/v1/tokens", headers={**BAD, "X-Forwarded-For": chain})
                assert response.status_code == 401, response.text
            limited = await client.get(
                "/v1/tokens",
                headers={**BAD, "X-Forwarded-For": "203.0.113.99, 198.51.100.7"},
            )
            assert limited.status_code == 429
            other = await client.get(
                "/v1/tokens", headers={**BAD, "X-Forwarded-For": "198.51.100.8"}
            )
            assert other.status_code == 401  # another client behind the same proxy
        denials = await denials_after(context, start)
        assert [e.client_address for e in denials] == ["198.51.100.7"] * (LIMIT + 1) + [
            "198.51.100.8"
        ]

    def test_right_most_untrusted_hop(self) -> None:
        proxies = TrustedProxies.parse(["10.0.0.0/8", "::1"])
        assert proxies.client("10.0.0.5", ["1.1.1.1, 2.2.2.2", "10.0.0.9"]) == "2.2.2.2"
        assert proxies.client("192.0.2.1", ["1.1.1.1"]) == "192.0.2.1"  # peer not trusted
        assert proxies.client("::1", ["nonsense, 10.0.0.1"]) == "10.0.0.1"
        assert proxies.client("::1", []) == "::1"
        assert TrustedProxies().client("10.0.0.5", ["1.1.1.1"]) == "10.0.0.5"

    def test_a_hop_is_an_address_and_nothing_more(self) -> None:
        """An IPv6 zone (``%…``) may carry any text: a hop with one is not an address, so
        the walk stops before it, as at any other hop a trusted proxy did not write."""
        proxies = TrustedProxies.parse(["10.0.0.0/8"])
        forged = "fe80::1%forged\n" + "x" * 100
        assert proxies.client("10.0.0.5", [f"{forged}, 10.0.0.9"]) == "10.0.0.9"
        assert proxies.client("10.0.0.5", ["fe80::1%eth0"]) == "10.0.0.5"


class TestSharedAddress:
    async def test_a_valid_token_is_not_refused_for_others_failures(
        self, context: AppContext
    ) -> None:
        await fresh_window()
        valid = await issue_token(context, Role.ADMIN)
        app = create_app(context.settings, context=context)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.50", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(LIMIT):
                assert (await client.get("/v1/tokens", headers=BAD)).status_code == 401
            assert (await client.get("/v1/tokens", headers=valid.headers)).status_code == 200
            assert (await client.get("/v1/tokens", headers=BAD)).status_code == 429
            assert (await client.get("/v1/tokens", headers=valid.headers)).status_code == 200

    async def test_an_ipv6_client_is_counted_by_its_64_bit_prefix(
        self, context: AppContext
    ) -> None:
        """One IPv6 client holds a whole /64: new addresses from it are the same client,
        or each failure could come from a fresh one (and write an audit row)."""
        await fresh_window()
        app = create_app(context.settings, context=context)

        async def status(address: str) -> int:
            transport = httpx.ASGITransport(app=app, client=(address, 4000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return (await client.get("/v1/tokens", headers=BAD)).status_code

        statuses = [await status(f"2001:db8:5:6::{i + 1:x}") for i in range(LIMIT + 1)]
        assert statuses == [401] * LIMIT + [429]
        assert await status("2001:db8:5:7::1") == 401  # another /64: another client

    async def test_requests_without_a_token_count_and_flooding_audits_once(
        self, context: AppContext
    ) -> None:
        await fresh_window()
        start = await last_seq(context)
        limited_before = rate_limited(context)
        app = create_app(context.settings, context=context)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.51", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            statuses = [(await client.get("/v1/tokens")).status_code for _ in range(LIMIT + 30)]
        assert statuses == [401] * LIMIT + [429] * 30
        denials = await denials_after(context, start)
        assert [e.summary["reason"] for e in denials] == ["missing_token"] * LIMIT + [
            "rate_limited"
        ]
        assert rate_limited(context) - limited_before == 30


class TestFlood:
    async def test_valid_requests_succeed_while_a_thousand_bad_ones_arrive(
        self, context: AppContext
    ) -> None:
        valid = await issue_token(context, Role.ADMIN)
        known = await issue_token(context, Role.VIEWER)
        bad_headers = itertools.cycle(
            [
                {},  # no token
                BAD,  # malformed
                {"Authorization": f"Bearer {new_token(new_token_id())[0]}"},  # unknown
                {"Authorization": f"Bearer {new_token(known.id)[0]}"},  # wrong secret
            ]
        )
        start = await last_seq(context)
        app = create_app(context.settings, context=context)
        async with live(app, context) as url, http(url) as client:

            async def good() -> int:
                response = await client.get(
                    "/v1/tokens", params={"limit": 1}, headers=valid.headers
                )
                return response.status_code

            flood = [
                asyncio.create_task(raw_get(url, "/v1/tokens", next(bad_headers)))
                for _ in range(1000)
            ]
            valid_tasks = []
            for _ in range(50):  # spread among the flood
                valid_tasks.append(asyncio.create_task(good()))
                await asyncio.sleep(0)
            bad_statuses = await asyncio.gather(*flood)
            valid_statuses = await asyncio.gather(*valid_tasks)
            valid_statuses.append(await good())  # and once the address is far past its limit
        assert valid_statuses == [200] * 51
        assert set(bad_statuses) <= {401, 429}
        assert bad_statuses.count(429) > 0
        # Bounded audit: the failures under the limit and one refusal per one-minute
        # window (the test may straddle two).
        rows = await denials_after(context, start)
        assert LIMIT + 1 <= len(rows) <= 2 * (LIMIT + 1)
