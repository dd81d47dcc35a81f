"""The committed OpenAPI document is the app's, and the app keeps its promises.

The schemathesis test drives a real uvicorn server on 127.0.0.1 (each backend) with
every built-in check; it grows by itself as operations are added. On top of what the
schema describes it tries edge values that once answered 500: control characters inside
strings and timestamps at years 1 and 9999 with offsets (and cursors carrying both).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import functools
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from app.auth.roles import Role
from app.bootstrap import build_context
from app.cli.admin import render_openapi
from app.core.settings import Settings
from app.drivers.docker_config import host_name
from app.main import create_app
from app.webhooks.sender import SENDER
from tests.factories import issue_token
from tests.helpers import REPO_ROOT, free_port, in_thread, no_dns

COMMITTED = REPO_ROOT / "openapi" / "openapi.json"
# Examples per operation: 30 in the suite; `make fuzz` sets 1,000.
EXAMPLES = int(os.environ.get("FORMULA_OPS_FUZZ_EXAMPLES", "30"))
IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")


def test_committed_document_is_current() -> None:
    assert COMMITTED.read_text() == render_openapi(), (
        "openapi/openapi.json is stale: run `formula-ops openapi`"
    )


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    document = json.loads(render_openapi())
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_every_operation_has_id_tag_and_problem_errors() -> None:
    operations = _operations()
    assert operations
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    for method, path, operation in operations:
        assert operation.get("tags"), f"{method} {path} has no tag"
        responses = operation["responses"]
        assert "500" in responses, f"{method} {path} documents no 500"
        for code, response in responses.items():
            if int(code) >= 400:
                assert list(response["content"]) == ["application/problem+json"], (method, path)


async def _issue_admin(settings: Settings) -> str:
    context = build_context(settings)
    try:
        return (await issue_token(context, Role.ADMIN, name="schemathesis")).value
    finally:
        await context.aclose()


@pytest.fixture(scope="module")
def live_server(settings: Settings) -> Iterator[tuple[str, str]]:
    """The real app under uvicorn, on its own thread and event loop, and an admin token.

    Rate limits are lifted here (they have their own tests): the fuzzer sends thousands
    of requests, many of them unauthenticated on purpose.
    """
    settings = settings.model_copy(
        update={
            "auth_failures_per_minute": 10**9,
            "token_requests_per_minute": 10**9,
            # Notification channels may contact the tests' loopback address.
            "webhooks": settings.webhooks.model_copy(update={"channel_hosts": ["127.0.0.1"]}),
        }
    )
    token = in_thread(asyncio.run, _issue_admin(settings))
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "the server failed to start"
        assert time.monotonic() < deadline, "the server did not start in time"
        time.sleep(0.02)
    app.state.context.resources[SENDER].use_resolver(no_dns)
    yield f"http://127.0.0.1:{port}", token
    server.should_exit = True
    thread.join(10)


DOCUMENT = json.loads(COMMITTED.read_text())
schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
# The fuzzer's malformed text and numbers meet PostgreSQL's stricter types (a NUL byte,
# a 64-bit overflow) there; schema-valid requests run on the embedded default in
# test_openapi_positive.py.
pytestmark = pytest.mark.one_backend("postgres")
load_all_checks()
BEARER: dict[str, str] = {}  # the live server's admin token, set by its fixture


@schema.auth(refresh_interval=None)
class BearerToken:
    """Schemathesis signs requests itself, so it also knows when it leaves auth out."""

    def get(self, case: Any, context: Any) -> str:
        return BEARER.get("token", "not-yet-known")

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


ALL_CHECKS = list(CHECKS.get_all())

# Edge values tried on top of what the schema describes: control characters in text,
# and timestamps whose instant in UTC leaves years 1-9999 (or just stays inside).
EDGE_TEXT = [
    "\x00",
    "\x01",
    "\t",
    "\n",
    "\r",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\U0010ffff",
]
EDGE_TIMESTAMPS = [
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00-23:59",
    "0001-01-01T23:58:59.999999+23:59",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T00:00:00+23:59",
    "9999-12-31T00:01:00-23:59",
]
_OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
schemathesis.openapi.format(
    "date-time",
    st.sampled_from(EDGE_TIMESTAMPS)
    | st.datetimes(
        min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=_OFFSETS
    ).map(dt.datetime.isoformat),
)


@functools.cache
def _validator(path: str, method: str, where: str, name: str | None = None) -> Any:
    """The committed schema of one part of an operation (with the components it uses)."""
    operation = DOCUMENT["paths"][path][method.lower()]
    if where == "body":
        part = operation["requestBody"]["content"]["application/json"]["schema"]
    else:
        location = {"query": "query", "path_parameters": "path"}[where]
        (parameter,) = [
            p for p in operation["parameters"] if p["in"] == location and p["name"] == name
        ]
        part = parameter["schema"]
    schema = {**part, "components": DOCUMENT["components"]}
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def _text_slots(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _text_slots(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _text_slots(item, (*path, index))


def _with_edge_text(case: Any, choice: tuple[tuple[Any, ...], str] | None) -> Any:
    """``case`` with an edge character inside one of its strings, where the schema admits
    the result (a positive case stays positive: a description takes a newline)."""
    if choice is None:
        return case
    (where, *path), character = choice
    value = copy.deepcopy(getattr(case, where))
    holder = value
    for key in path[:-1]:
        holder = holder[key]
    text = holder[path[-1]]
    holder[path[-1]] = text[: len(text) // 2] + character + text[len(text) // 2 :]
    operation = (case.operation.path, case.operation.method)
    if where == "body":
        valid = _validator(*operation, "body").is_valid(value)
    else:
        valid = _validator(*operation, where, path[0]).is_valid(value[path[0]])
    if valid:
        setattr(case, where, value)
    return case


@schema.hook
def flatmap_case(context: Any, case: Any) -> st.SearchStrategy[Any]:
    return with_edge_text(case, ("body", "query", "path_parameters"))


def with_edge_text(case: Any, places: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """``case``, or ``case`` with an edge character in one of its strings in ``places``."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return st.just(case)
    slots = [
        (where, *path)
        for where in places
        for path in _text_slots(getattr(case, where, None) or {})
        if path and (where, *path)[:2] != ("query", "cursor")
    ]
    if not slots:
        return st.just(case)
    # NUL half the time: PostgreSQL cannot store it at all.
    characters = st.just("\x00") | st.sampled_from(EDGE_TEXT)
    choices = st.none() | st.tuples(st.sampled_from(slots), characters)
    return choices.map(lambda choice: _with_edge_text(case, choice))


def _one_form(body: dict[str, Any]) -> None:
    """Rules a JSON schema cannot state (the description says them): one of the two forms
    of a deployment request, each service once."""
    if "services" in body and ("service" in body or "version" in body):
        if "service" in body and "version" in body:
            body.pop("services")
        else:
            body.pop("service", None)
            body.pop("version", None)
    services = body.get("services")
    if isinstance(services, list):
        seen: set[Any] = set()
        body["services"] = [
            s for s in services if not (s.get("name") in seen or seen.add(s.get("name")))
        ]


def global_scoped_token(body: dict[str, Any]) -> None:
    """A token limited to a scope (alerts) is global: not limited to an environment."""
    if body.get("scope"):
        body.pop("environment", None)


def webhook_destination(body: dict[str, Any], *, creating: bool) -> None:
    """Rules a JSON schema cannot state for a webhook: a destination the guard allows
    (tests allow 127.0.0.1 only; a made-up name would be looked up), registered event
    types, header names the server does not own; a new endpoint is a webhook (`url`) or
    a channel (`channel`, an apprise URL to an allowed host, with message templates for
    registered types and no webhook-only fields), exactly one."""
    if creating and "url" not in body and "channel" not in body:
        body["url"] = "http://127.0.0.1:9/hook"
    if creating and "url" in body:
        body.pop("channel", None)
        body.pop("templates", None)
    if "url" in body:
        body["url"] = "http://127.0.0.1:9/hook"
    if "channel" in body:
        body["channel"] = "json://127.0.0.1:9/hook"
        if creating:
            body.pop("headers", None)
            body.pop("format", None)
    if "templates" in body:
        body["templates"] = {"*": "{type} at {timestamp}"}
    if "event_types" in body:
        body["event_types"] = ["*"]
    if isinstance(body.get("headers"), dict):
        body["headers"] = {}


def status_rules(path: str, body: dict[str, Any]) -> None:
    """Rules a JSON schema cannot state for components and thresholds: a component's
    services must exist (none does here); a threshold's levels and severities are in
    order, its alert names distinct ignoring case, its query has only the known
    placeholders."""
    if path.startswith("/v1/components") and isinstance(body.get("services"), list):
        body["services"] = []
    if not path.startswith("/v1/thresholds/"):
        return
    if "warning" in body or "critical" in body:
        body.update(warning=1.0, critical=2.0)
    if "warning_severity" in body or "critical_severity" in body:
        body.update(warning_severity="P2", critical_severity="P1")
    if isinstance(body.get("alert_names"), list):
        seen: set[str] = set()
        body["alert_names"] = [
            a for a in body["alert_names"] if not (a.casefold() in seen or seen.add(a.casefold()))
        ]
    if isinstance(body.get("prometheus_query"), str) and "$" in body["prometheus_query"]:
        body["prometheus_query"] = "up"


def environment_rules(path: str, body: dict[str, Any]) -> None:
    """Rules a JSON schema cannot state for environments and services: an environment's
    docker hosts have distinct names; a service's config names one of its environment's
    docker hosts (the fuzzer's made-up environments have none) or gives a URL."""
    if not path.startswith("/v1/environments"):
        return
    if isinstance(body.get("docker_hosts"), list):
        seen: set[Any] = set()
        body["docker_hosts"] = [
            host
            for host in body["docker_hosts"]
            if not (
                isinstance(host, dict) and (host.get("name") in seen or seen.add(host.get("name")))
            )
        ]
    config = body.get("config")
    if isinstance(config, dict) and host_name(config) is not None:
        config["docker_host"] = "unix:///var/run/docker.sock"


def maintenance_window(body: dict[str, Any]) -> None:
    """Rules a JSON schema cannot state for a maintenance window: components and
    environments that exist (the fuzzer's made-up ones do not), each once, and a span
    that ends after it starts, in the future."""
    for name in ("components", "environments"):
        if name in body:
            body[name] = []
    if "scheduled_for" in body or "scheduled_until" in body:
        start = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        body["scheduled_for"] = start.isoformat()
        body["scheduled_until"] = (start + dt.timedelta(hours=1)).isoformat()


def schedule_rules(body: dict[str, Any]) -> None:
    """Rules a JSON schema cannot state for a schedule: a runbook of the catalog with
    parameters it takes, a cron expression that names a date, an IANA time zone."""
    if "runbook" in body or "parameters" in body:
        body["runbook"] = "test-schedule-noop"
        body["parameters"] = {}
    if "cron" in body:
        body["cron"] = "0 4 * * *"
    if "timezone" in body:
        body["timezone"] = "Europe/Berlin"


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
def test_api_conforms_to_its_schema(case: Any, live_server: tuple[str, str]) -> None:
    base_url, BEARER["token"] = live_server
    prepare(case)
    case.call_and_validate(base_url=base_url, checks=ALL_CHECKS)


def prepare(case: Any) -> None:
    """What the fuzzer cannot know from the schema: unique idempotency keys, opaque
    cursors and ETags, and the rules stated only in descriptions (each function above)."""
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.match(key):
        # A key names one request: the fuzzer would reuse a valid key for other bodies,
        # which the API rightly refuses (422). Keep the malformed ones it sends.
        headers["Idempotency-Key"] = f"schemathesis-{uuid.uuid4()}"
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and case.query and "cursor" in case.query:
        # Cursors are opaque values the API hands out; a made-up one is rightly a 422.
        del case.query["cursor"]
    if positive and case.path == "/v1/deployments" and isinstance(case.body, dict):
        _one_form(case.body)
    if positive and case.path == "/v1/tokens" and isinstance(case.body, dict):
        global_scoped_token(case.body)
    if positive and case.path.startswith("/v1/webhooks") and isinstance(case.body, dict):
        webhook_destination(case.body, creating=case.method == "POST")
    if positive and isinstance(case.body, dict):
        status_rules(case.path, case.body)
        environment_rules(case.path, case.body)
    if positive and case.path.startswith("/v1/maintenances") and isinstance(case.body, dict):
        maintenance_window(case.body)
    if positive and case.path.startswith("/v1/schedules") and isinstance(case.body, dict):
        schedule_rules(case.body)
    if positive and "If-Match" in headers:
        # ETags too: a made-up one is rightly a 412.
        del headers["If-Match"]


LISTS = sorted(
    path
    for path, item in DOCUMENT["paths"].items()
    if any(p["name"] == "cursor" for p in item.get("get", {}).get("parameters", []))
)
_CURSOR_TEXT = st.sampled_from(EDGE_TEXT) | st.text(max_size=70)


@st.composite
def _made_up_cursors(draw: st.DrawFn) -> str:
    stamp = draw(
        st.sampled_from(EDGE_TIMESTAMPS)
        | st.integers(min_value=-(10**19), max_value=10**19).map(str)
        | _CURSOR_TEXT
    )
    id = draw(st.builds("x{}y".format, _CURSOR_TEXT) | _CURSOR_TEXT)
    # The cursor's shape (``<microseconds>.<id>``), or the JSON of an older shape.
    old = base64.urlsafe_b64encode(json.dumps([stamp, id]).encode()).decode().rstrip("=")
    return draw(st.sampled_from([f"{stamp}.{id}", old]))


@given(cursor=_made_up_cursors())
@hypothesis_settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
def test_made_up_cursors_are_refused_not_failed(cursor: str, live_server: tuple[str, str]) -> None:
    """A cursor is opaque, so the fuzzer above leaves it out; these carry its edge values
    (control characters, timestamps outside UTC's years 1-9999) in a cursor's shape."""
    base_url, token = live_server
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, trust_env=False) as http:
        for path in LISTS:
            response = http.get(path, params={"cursor": cursor})
            assert response.status_code in (200, 422), (path, cursor, response.text)
            if response.status_code == 422:
                assert response.json()["type"] in (
                    "/problems/invalid-cursor",
                    "/problems/validation-error",
                ), response.text
