"""Every error class renders as an RFC 9457 problem (``application/problem+json``).

Routes that exercise request bodies and failures are added to the real application for
the test (the foundation ships no body-taking route yet); everything else is the app as
it is served.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import PROBLEM_MEDIA_TYPE, AppError
from app.core.schemas import RequestModel

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


class Widget(RequestModel):
    name: str = Field(min_length=1, max_length=20)
    size: int = Field(ge=1)


class WidgetOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    size: int


class Conflict(AppError):
    type = "/problems/widget-busy"
    title = "Widget busy"
    status = 409


probe = APIRouter(prefix="/v1/_probe")


@probe.post("/widgets", status_code=201)
async def create_widget(body: Widget) -> WidgetOut:
    return WidgetOut(name=body.name, size=body.size)


@probe.post("/busy")
async def busy() -> None:
    raise Conflict("widget w1 is being resized", headers={"Retry-After": "3"})


@probe.get("/boom")
async def boom() -> None:
    secret = "s3cr3t-in-a-local"  # must reach the log's traceback, never the client
    raise RuntimeError(f"kaboom {secret}")


@pytest.fixture
def app(fresh_app: FastAPI) -> FastAPI:
    fresh_app.include_router(probe)
    return fresh_app


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    return body


class TestUnknownRoutesAndMethods:
    async def test_unknown_path_is_404(self, client: httpx.AsyncClient) -> None:
        body = assert_problem(await client.post("/v1/nothing"), 404)
        assert body["type"] == "/problems/not-found"

    async def test_wrong_method_is_405_with_allow(self, client: httpx.AsyncClient) -> None:
        response = await client.delete("/health")
        body = assert_problem(response, 405)
        assert response.headers["allow"] == "GET"
        assert body["type"] == "/problems/method-not-allowed"


class TestBodyTooLarge:
    async def test_declared_length_over_limit_is_413(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/nothing", content=b"x" * (2 * 1024 * 1024))
        body = assert_problem(response, 413)
        assert body["type"] == "/problems/payload-too-large"

    async def test_streamed_body_over_limit_is_413(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b"x" * 65536  # 2.5 MiB without a Content-Length

        response = await client.post("/v1/_probe/widgets", content=chunks())
        assert "content-length" not in response.request.headers
        assert_problem(response, 413)

    async def test_body_at_the_limit_is_read(self, client: httpx.AsyncClient) -> None:
        padding = " " * (1024 * 1024 - 40)
        payload = ('{"name": "w", "size": 2}' + padding).encode()
        assert len(payload) <= 1024 * 1024
        response = await client.post(
            "/v1/_probe/widgets", content=payload, headers={"content-type": "application/json"}
        )
        assert response.status_code == 201, response.text


class TestValidation:
    async def test_malformed_json_is_422_with_errors(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/_probe/widgets",
            content=b'{"name": "w", "size": ',
            headers={"content-type": "application/json"},
        )
        body = assert_problem(response, 422)
        assert body["type"] == "/problems/validation-error"
        errors = body["errors"]
        assert isinstance(errors, list)
        assert errors
        assert errors[0]["type"] == "json_invalid"
        assert errors[0]["loc"][0] == "body"

    async def test_unknown_fields_are_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/_probe/widgets", json={"name": "w", "size": 1, "colour": "red"}
        )
        body = assert_problem(response, 422)
        assert {
            "loc": ["body", "colour"],
            "msg": "Extra inputs are not permitted",
            "type": "extra_forbidden",
        } in body["errors"]  # type: ignore[operator]

    async def test_each_invalid_field_is_listed(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/_probe/widgets", json={"name": "", "size": 0})
        body = assert_problem(response, 422)
        locs = sorted(tuple(e["loc"]) for e in body["errors"])  # type: ignore[union-attr]
        assert locs == [("body", "name"), ("body", "size")]

    async def test_wrong_content_type_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/v1/_probe/widgets", content=b"name=w", headers={"content-type": "text/plain"}
        )
        assert_problem(response, 422)


class TestApplicationErrors:
    async def test_app_error_carries_type_status_and_headers(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post("/v1/_probe/busy")
        body = assert_problem(response, 409)
        assert body["type"] == "/problems/widget-busy"
        assert body["title"] == "Widget busy"
        assert body["detail"] == "widget w1 is being resized"
        assert response.headers["retry-after"] == "3"


class TestUnexpectedErrors:
    async def test_500_is_generic_and_the_traceback_is_logged(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="app.requests"):
            response = await client.get("/v1/_probe/boom")
        body = assert_problem(response, 500)
        assert body["type"] == "/problems/internal-error"
        assert body["request_id"] in str(body["detail"])
        assert "kaboom" not in response.text
        assert "Traceback" not in response.text
        assert "s3cr3t" not in response.text
        logged = [r for r in caplog.records if r.exc_info]
        assert logged
        assert body["request_id"] in logged[-1].getMessage()
        assert "kaboom" in str(logged[-1].exc_info[1])  # type: ignore[index]

    async def test_client_request_id_is_echoed(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/_probe/boom", headers={"x-request-id": "ci-run-42"})
        assert response.headers["x-request-id"] == "ci-run-42"
        assert response.json()["request_id"] == "ci-run-42"

    async def test_unsafe_request_id_is_replaced(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health", headers={"x-request-id": "bad id\twith spaces"})
        assert response.headers["x-request-id"] != "bad id\twith spaces"


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/tokens")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
