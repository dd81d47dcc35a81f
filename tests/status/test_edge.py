"""The public status's answers at the edge (app/status/asgi.py) behave like the rest of
the application's: the request id (echoed or made) and the request log on the direct
path, `Vary: Host` when the documents name the request's host, and a refused CORS
preflight answered with a problem."""

from __future__ import annotations

import logging

import httpx
import pytest

from app.core.context import AppContext
from tests.factories import app_with
from tests.status import data

# The edge cache and headers; the summary's queries run on both (test_public_api).
pytestmark = pytest.mark.one_backend("sqlite")

PATHS = ("/api/v2/summary.json", "/api/v2/status.json", "/status")
ORIGIN = {"Origin": "https://example.org"}


@pytest.mark.parametrize("path", PATHS)
async def test_direct_answers_carry_the_request_id_and_are_logged(
    client: httpx.AsyncClient,
    context: AppContext,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    await data.seed_components(context)
    await client.get(path)  # fills the cache: the next answers come from it
    # Logged at DEBUG (an INFO line per request would halve the rate of this path).
    with caplog.at_level(logging.DEBUG, logger="app.requests"):
        echoed = await client.get(path, headers={"X-Request-ID": "client-chosen-1"})
        made = await client.get(path)
        revalidated = await client.get(
            path, headers={"If-None-Match": echoed.headers["etag"], "X-Request-ID": "client-2"}
        )
    assert echoed.status_code == 200
    assert echoed.headers["x-request-id"] == "client-chosen-1"
    assert made.headers["x-request-id"]
    assert made.headers["x-request-id"] != echoed.headers["x-request-id"]
    assert revalidated.status_code == 304
    assert revalidated.headers["x-request-id"] == "client-2"
    logged = [r.getMessage() for r in caplog.records if r.name == "app.requests"]
    assert {r.levelno for r in caplog.records if r.name == "app.requests"} == {logging.DEBUG}
    assert any(line.startswith(f"GET {path} 200") for line in logged), logged
    assert any(line.startswith(f"GET {path} 304") for line in logged), logged
    # A malformed id is replaced, as everywhere else.
    forged = await client.get(path, headers={"X-Request-ID": "bad id\twith spaces"})
    assert forged.headers["x-request-id"] != "bad id\twith spaces"
    # The request metrics name the route's path, as for the other routes.
    metrics = (await client.get("/metrics")).text
    assert f'route="{path}"' in metrics


async def test_a_host_derived_answer_varies_on_host(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    await data.seed_components(context)
    for path in PATHS:
        forged = await client.get(path, headers={"Host": "attacker.example"})
        assert forged.status_code == 200
        assert forged.headers["cache-control"].startswith("public")
        assert forged.headers["vary"] == "Host"
        again = await client.get(
            path,
            headers={"Host": "attacker.example", "If-None-Match": forged.headers["etag"]},
        )
        assert again.status_code == 304
        assert again.headers["vary"] == "Host"
    named = await client.get("/api/v2/summary.json", headers={"Host": "attacker.example"})
    assert named.json()["page"]["url"] == "http://attacker.example/status"
    # CORS: any origin, so no `Vary: Origin` is needed; Host stays.
    cors = await client.get("/api/v2/summary.json", headers=ORIGIN)
    assert cors.headers["access-control-allow-origin"] == "*"
    assert cors.headers["vary"] == "Host"


async def test_a_configured_page_url_does_not_vary_on_host(context: AppContext) -> None:
    await data.seed_components(context)
    status = {**context.settings.status.model_dump(), "page_url": "https://status.example.com/"}
    app = app_with(context, status=status)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for path in PATHS:
            answer = await http.get(path, headers={"Host": "attacker.example"})
            assert answer.status_code == 200
            assert "vary" not in answer.headers
            again = await http.get(
                path, headers={"Host": "attacker.example", "If-None-Match": answer.headers["etag"]}
            )
            assert again.status_code == 304
            assert "vary" not in again.headers
        body = (await http.get("/api/v2/summary.json", headers={"Host": "x.example"})).json()
    assert body["page"]["url"] == "https://status.example.com/"


@pytest.mark.parametrize(
    "asked",
    [
        {"Access-Control-Request-Method": "POST"},
        {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "X-Custom"},
        {"Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "X-A, X-B"},
    ],
)
@pytest.mark.parametrize("path", ["/api/v2/summary.json", "/status"])
async def test_a_refused_preflight_is_a_problem(
    client: httpx.AsyncClient,
    context: AppContext,
    caplog: pytest.LogCaptureFixture,
    asked: dict[str, str],
    path: str,
) -> None:
    with caplog.at_level(logging.INFO, logger="app.requests"):
        response = await client.options(
            path, headers={**ORIGIN, **asked, "X-Request-ID": "preflight-1"}
        )
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "app.requests"]
    assert logged.startswith(f"OPTIONS {path} 400 ")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/cors-preflight-refused"
    assert problem["status"] == 400
    assert problem["instance"] == path
    assert problem["request_id"] == "preflight-1"
    assert response.headers["x-request-id"] == "preflight-1"
    # What is allowed is still said, as in an accepted preflight.
    assert response.headers["access-control-allow-methods"] == "GET"
    assert response.headers["access-control-allow-origin"] == "*"


async def test_an_allowed_preflight_is_unchanged(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    response = await client.options(
        "/api/v2/summary.json",
        headers={
            **ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "If-None-Match",
        },
    )
    assert response.status_code == 200
    assert response.text == "OK"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-request-id"]
