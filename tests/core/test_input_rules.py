"""No input answers 500: control characters in text, timestamps outside what UTC can
hold and cursors carrying either are 422 problems, on both backends."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.auth.roles import Role
from app.cli.admin import render_openapi
from app.core.context import AppContext
from app.core.errors import PROBLEM_MEDIA_TYPE
from tests.factories import IssuedToken, app_with, issue_token

# NUL (PostgreSQL cannot store it), another C0, CR, ESC, DEL and two C1 characters
# (U+0085 ends a line for Python, U+009B starts a terminal escape).
CONTROL = ["\x00", "\x07", "\r", "\x1b", "\x7f", "\x85", "\x9b"]
LISTS = [
    "/v1/audit-events",
    "/v1/runs",
    "/v1/environments",
    "/v1/deployments",
    "/v1/tokens",
    "/v1/health-checks",
]
# Valid RFC 3339, but the instant lies before year 1 or after year 9999 in UTC.
OUT_OF_RANGE = [
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:59:59.999999+23:59",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:00:00.5-23:59",
]
# The edges that are still in range.
IN_RANGE = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00-01:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59+01:00",
]


@pytest.fixture
async def staging(client: httpx.AsyncClient, admin: IssuedToken) -> str:
    response = await client.put("/v1/environments/staging", json={}, headers=admin.headers)
    assert response.status_code == 201, response.text
    return "staging"


def assert_422(response: httpx.Response, where: str, name: str) -> dict[str, Any]:
    """A 422 problem whose one error is at ``where`` (body, query, path), in ``name``."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == 422
    (error,) = body["errors"]
    assert error["loc"][0] == where, body
    assert name in error["loc"], body
    return body


def cursor(micros: int | str, id: str) -> str:
    """A cursor's shape: ``<microseconds since the epoch>.<id>``."""
    return f"{micros}.{id}"


def process_service(**extra: Any) -> dict[str, Any]:
    return {"driver": "process", "config": {"command": ["true"]}, **extra}


def docker_service(**config: Any) -> dict[str, Any]:
    return {"driver": "docker", "config": {"image": "nginx", **config}}


# (method, path, body with `{}` where the text goes, where the error is)
BODY_FIELDS: dict[str, tuple[str, str, Any, tuple[str, str]]] = {
    "environment description (PUT)": (
        "PUT",
        "/v1/environments/e1",
        {"description": "a{}b"},
        ("body", "description"),
    ),
    "environment description (POST)": (
        "POST",
        "/v1/environments",
        {"name": "e1", "description": "a{}b"},
        ("body", "description"),
    ),
    "environment database": (
        "PUT",
        "/v1/environments/e1",
        {"database": "a{}b"},
        ("body", "database"),
    ),
    "deployment description": (
        "POST",
        "/v1/deployments",
        {"environment": "staging", "service": "web", "version": "1", "description": "a{}b"},
        ("body", "description"),
    ),
    "deployment ref": (
        "POST",
        "/v1/deployments",
        {"environment": "staging", "service": "web", "version": "1", "ref": "a{}b"},
        ("body", "ref"),
    ),
    "health_url": (
        "PUT",
        "/v1/environments/staging/services/web",
        process_service(health_url="http://127.0.0.1/a{}b"),
        ("body", "health_url"),
    ),
    "smoke test url": (
        "PUT",
        "/v1/environments/staging/services/web",
        process_service(smoke_tests=[{"name": "t", "type": "http", "url": "http://h/{}"}]),
        ("body", "smoke_tests"),
    ),
    "smoke test name": (
        "PUT",
        "/v1/environments/staging/services/web",
        process_service(smoke_tests=[{"name": "a{}", "type": "http", "url": "http://h/"}]),
        ("body", "smoke_tests"),
    ),
    "process argv": (
        "PUT",
        "/v1/environments/staging/services/web",
        {"driver": "process", "config": {"command": ["echo", "a{}b"]}},
        ("body", "command"),
    ),
    "process cwd": (
        "PUT",
        "/v1/environments/staging/services/web",
        {"driver": "process", "config": {"command": ["true"], "cwd": "/srv/{}"}},
        ("body", "cwd"),
    ),
    "docker network": (
        "PUT",
        "/v1/environments/staging/services/web",
        docker_service(network="a{}b"),
        ("body", "network"),
    ),
    "docker host": (
        "PUT",
        "/v1/environments/staging/services/web",
        docker_service(docker_host="tcp://a{}b:2375"),
        ("body", "docker_host"),
    ),
    "token name": (
        "POST",
        "/v1/tokens",
        {"name": "ci{}", "role": "viewer"},
        ("body", "name"),
    ),
}


def _fill(template: Any, text: str) -> Any:
    if isinstance(template, str):
        return template.replace("{}", text)
    if isinstance(template, list):
        return [_fill(v, text) for v in template]
    if isinstance(template, dict):
        return {k: _fill(v, text) for k, v in template.items()}
    return template


class TestControlCharacters:
    @pytest.mark.parametrize("field", list(BODY_FIELDS))
    async def test_nul_in_body_text_is_422(
        self, client: httpx.AsyncClient, admin: IssuedToken, staging: str, field: str
    ) -> None:
        method, path, template, loc = BODY_FIELDS[field]
        response = await client.request(
            method, path, json=_fill(template, "\x00"), headers=admin.headers
        )
        assert_422(response, *loc)

    @pytest.mark.parametrize("character", CONTROL, ids=lambda c: f"U+{ord(c):04X}")
    async def test_every_control_character_is_422(
        self, client: httpx.AsyncClient, admin: IssuedToken, staging: str, character: str
    ) -> None:
        for field in ("environment description (PUT)", "deployment description", "health_url"):
            method, path, template, loc = BODY_FIELDS[field]
            response = await client.request(
                method, path, json=_fill(template, character), headers=admin.headers
            )
            assert_422(response, *loc)

    @pytest.mark.parametrize(
        ("path", "params"),
        [
            ("/v1/runs", {"environment": "a\x00b"}),
            ("/v1/runs", {"requested_by": "a\x85b"}),
            ("/v1/audit-events", {"actor": "a\x00b"}),
            ("/v1/audit-events", {"resource_id": "a\x1bb"}),
        ],
    )
    async def test_query_text_is_refused_with_422(
        self, client: httpx.AsyncClient, admin: IssuedToken, path: str, params: dict[str, str]
    ) -> None:
        response = await client.get(path, params=params, headers=admin.headers)
        assert_422(response, "query", *params)

    @pytest.mark.parametrize(
        "path", ["/v1/runs/a%00b", "/v1/deployments/a%C2%85b", "/v1/tokens/a%1Bb"]
    )
    async def test_path_text_is_refused_with_422(
        self, client: httpx.AsyncClient, admin: IssuedToken, path: str
    ) -> None:
        name = {"runs": "run_id", "deployments": "deployment_id", "tokens": "token_id"}
        assert_422(await client.get(path, headers=admin.headers), "path", name[path.split("/")[2]])

    async def test_descriptions_take_tab_and_newline(
        self, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        text = "line one\n\tline two ü €"
        response = await client.put(
            "/v1/environments/e1", json={"description": text}, headers=admin.headers
        )
        assert response.status_code == 201, response.text
        response = await client.get("/v1/environments/e1", headers=admin.headers)
        assert response.json()["description"] == text

    async def test_argv_takes_newlines(
        self, client: httpx.AsyncClient, admin: IssuedToken, staging: str
    ) -> None:
        argv = ["python", "-c", "import sys\nprint(sys.argv)"]
        response = await client.put(
            "/v1/environments/staging/services/web",
            json={"driver": "process", "config": {"command": argv}},
            headers=admin.headers,
        )
        assert response.status_code == 201, response.text
        assert response.json()["config"]["command"] == argv


class TestTimestamps:
    @pytest.mark.parametrize("stamp", OUT_OF_RANGE)
    @pytest.mark.parametrize("path", ["/v1/audit-events", "/v1/runs"])
    async def test_out_of_range_is_422(
        self, client: httpx.AsyncClient, admin: IssuedToken, path: str, stamp: str
    ) -> None:
        for name in ("since", "until"):
            response = await client.get(path, params={name: stamp}, headers=admin.headers)
            body = assert_422(response, "query", name)
            assert "out of range" in body["errors"][0]["msg"]

    @pytest.mark.parametrize("path", ["/v1/audit-events", "/v1/runs"])
    async def test_the_edges_in_range_are_answered(
        self, client: httpx.AsyncClient, admin: IssuedToken, path: str
    ) -> None:
        for stamp in IN_RANGE:
            for name in ("since", "until"):
                response = await client.get(path, params={name: stamp}, headers=admin.headers)
                assert response.status_code == 200, (name, stamp, response.text)


class TestCursors:
    @pytest.mark.parametrize(
        "value",
        [
            cursor(1, "a\x00b"),
            cursor(1, "a\x85b"),
            cursor("1\x00", "x"),
            cursor("0001-01-01T00:00:00+01:00", "x"),
            cursor(10**18, "x"),
            "1.2.3",
        ],
        ids=["nul-id", "c1-id", "nul-stamp", "iso-stamp", "too-many-digits", "two-dots"],
    )
    async def test_bad_cursor_is_422_on_every_list(
        self, client: httpx.AsyncClient, admin: IssuedToken, value: str
    ) -> None:
        for path in LISTS:
            response = await client.get(path, params={"cursor": value}, headers=admin.headers)
            body = assert_422(response, "query", "cursor")
            assert body["type"] == "/problems/invalid-cursor", path

    async def test_cursors_at_the_edges_are_answered(
        self, client: httpx.AsyncClient, admin: IssuedToken
    ) -> None:
        for path in LISTS:
            # Beyond years 1 and 9999: the ends of the list, never an overflow.
            for stamp in (-(10**18) + 1, 10**18 - 1, -62135596800000001, 253402300800000000):
                value = cursor(stamp, "x")
                response = await client.get(path, params={"cursor": value}, headers=admin.headers)
                assert response.status_code == 200, (path, stamp, response.text)


class TestEventPositions:
    async def test_a_position_beyond_what_the_database_counts_is_422(
        self, client: httpx.AsyncClient, admin: IssuedToken, context: AppContext
    ) -> None:
        """``after`` and ``Last-Event-ID`` are event numbers (a 32-bit column): beyond it,
        a 422 before the stream starts, not an error in the middle of it."""
        operator = await issue_token(context, Role.OPERATOR)
        run = await client.post("/v1/health-checks", headers=operator.headers)
        assert run.status_code == 202, run.text
        run_id = run.json()["id"]
        cancelled = await client.post(f"/v1/runs/{run_id}/cancel", headers=operator.headers)
        assert cancelled.json()["status"] == "cancelled"  # a stream of it ends
        events = f"/v1/runs/{run_id}/events"
        for value in (2**31, 2**63, 10**30):
            response = await client.get(events, params={"after": value}, headers=admin.headers)
            assert_422(response, "query", "after")
            response = await client.get(
                events, headers={**admin.headers, "Last-Event-ID": str(value)}
            )
            assert_422(response, "header", "Last-Event-ID")


# Header values as a client may send them: empty, huge, non-ASCII bytes, numbers beyond
# 64 bits, lists, an IPv6 zone.
ODD_HEADER_VALUES = [
    b"",
    b" ",
    b"null",
    b"x" * 8000,
    "\u00e9\u2028".encode(),
    b"\xff\xfe",
    b"9" * 400,
    b"-1",
    b'"a", W/"b", *',
    b"wait=999999999999, respond-async",
    b"fe80::1%eth0, [::1]:80, 1.2.3.4:5, ::ffff:10.0.0.1",
]
ODD_HEADERS = [
    "Prefer",
    "If-Match",
    "Idempotency-Key",
    "Last-Event-ID",
    "X-Forwarded-For",
    "X-Request-ID",
]


class TestOddHeaders:
    async def test_no_header_value_answers_500(
        self, context: AppContext, staging: str, admin: IssuedToken
    ) -> None:
        """Every header the API reads, with odd values, on the routes that read it; also
        behind a trusted proxy, so X-Forwarded-For is parsed."""
        app = app_with(context, trusted_proxies=["127.0.0.0/8", "::1"])
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
        operator = await issue_token(context, Role.OPERATOR)
        run = await issue_token(context, Role.VIEWER)
        requests: list[tuple[str, str, IssuedToken, Any]] = [
            ("PUT", f"/v1/environments/{staging}", admin, {}),
            ("POST", "/v1/health-checks", operator, {"dry_run": True}),
            ("POST", "/v1/tokens", admin, {"name": "odd", "role": "viewer"}),
            ("GET", "/v1/runs/0000000000000000/events", run, None),
        ]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for name in ODD_HEADERS:
                for value in ODD_HEADER_VALUES:
                    for method, path, token, body in requests:
                        response = await client.request(
                            method, path, json=body, headers={**token.headers, name: value}
                        )
                        assert response.status_code < 500, (name, value, path, response.text)


def _strings(
    node: dict[str, Any], components: dict[str, Any], described: str = ""
) -> Iterator[tuple[dict[str, Any], str]]:
    """Every string schema under ``node`` with the nearest description above it."""
    if "$ref" in node:
        node = components[node["$ref"].rsplit("/", 1)[1]]
    described = node.get("description", described)
    if node.get("type") == "string" and "enum" not in node and "const" not in node:
        yield node, described
    for key in ("anyOf", "oneOf", "allOf"):
        for child in node.get(key, []):
            if "pattern" in node and "pattern" not in child:  # both apply to one value
                child = {**child, "pattern": node["pattern"]}
            yield from _strings(child, components, described)
    for child in node.get("prefixItems", []):
        yield from _strings(child, components, described)
    for key in ("items", "additionalProperties", "propertyNames"):
        if isinstance(node.get(key), dict):
            yield from _strings(node[key], components, described)
    for key in ("properties", "patternProperties"):
        for child in node.get(key, {}).values():
            yield from _strings(child, components, described)
    for pattern in node.get("patternProperties", {}):
        yield {"type": "string", "pattern": pattern}, described


def _request_strings() -> Iterator[tuple[str, dict[str, Any], str]]:
    document = json.loads(render_openapi())
    components = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                where = f"{method.upper()} {path} {parameter['in']} {parameter['name']}"
                if (parameter["in"], parameter["name"]) in NOT_STORED:
                    continue
                for node, described in _strings(parameter["schema"], components):
                    yield where, node, described
            body = operation.get("requestBody", {}).get("content", {})
            for content in body.values():
                for node, described in _strings(content["schema"], components):
                    yield f"{method.upper()} {path} body", node, described


# Compared or parsed, never stored; and the cursor, whose decoded text is checked.
NOT_STORED = {("header", "If-Match"), ("header", "Prefer"), ("query", "cursor")}
# A clean text for each kind of pattern, to put a control character into.
CARRIERS = [
    *("ab", "http://ab", "a b", "80", "/ab", "ab/cd", "postgresql://ab", "select ab"),
    *("unix:///ab", "ssh://ab", "redis://ab", "0 4 * * *"),
    "-----BEGIN CERTIFICATE-----ab-----END CERTIFICATE-----",
    "-----BEGIN PRIVATE KEY-----ab-----END PRIVATE KEY-----",
]
TAB_NEWLINE = ["\t", "\n"]


def test_every_request_string_refuses_control_characters() -> None:
    """The rule holds for every string a request carries, as stated in the schema: a
    pattern that admits a clean text refuses it with any control character inside; tab
    and newline only where the field's description says so."""
    checked = 0
    for where, node, described in _request_strings():
        if node.get("format") in ("date-time", "date"):
            continue  # the format admits no control character
        assert "pattern" in node, f"{where}: a string without a pattern"
        pattern = re.compile(node["pattern"])
        carriers = [c for c in CARRIERS if pattern.search(c)]
        assert carriers, f"{where}: no sample text fits {node['pattern']}"
        allowed = TAB_NEWLINE if "newline" in described else []
        for carrier in carriers:
            for code in [*range(0x20), *range(0x7F, 0xA0)]:
                text = carrier[:1] + chr(code) + carrier[1:]
                if pattern.search(text):
                    assert chr(code) in allowed, (where, node["pattern"], hex(code))
        checked += 1
    assert checked > 40
