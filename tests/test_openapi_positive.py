"""A request the schema allows is not refused: schemathesis's positive-data check.

Only schema-valid requests are generated, with no rewriting of the parts the schema
declares (cursors, `If-Match`, the two forms of a deployment request, URLs), against a
real uvicorn server on each backend (the `live_server` of tests/test_openapi.py).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from pydantic import TypeAdapter, ValidationError
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.bootstrap import build_registry
from app.deployments.schemas import DeploymentRequest
from app.drivers.base import DRIVERS
from app.drivers.docker_config import DockerConfig
from app.drivers.process_config import ProcessConfig
from app.environments.schemas import service_schemas
from tests.test_openapi import (
    COMMITTED,
    EXAMPLES,
    IDEMPOTENCY_KEY,
    environment_rules,
    global_scoped_token,
    live_server,
    maintenance_window,
    schedule_rules,
    status_rules,
    webhook_destination,
)

__all__ = ["live_server"]  # the fixture, shared with the other schemathesis test

# The defaults; and 412 where `If-Match` is taken: a well-formed one that names another
# revision (or a resource that does not exist) is a condition not met, like a 409, not
# a refused request.
DEFAULT = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
CONDITIONAL = {
    "include-method": ["PUT", "DELETE"],
    "include-path-regex": "^/v1/environments/",
    "checks": {"positive_data_acceptance": {"expected-statuses": [*DEFAULT, "412"]}},
}

CONDITIONAL_UPDATES = {
    "include-method": ["PATCH", "DELETE"],
    "include-path-regex": "^/v1/(components|thresholds)/",
    "checks": {"positive_data_acceptance": {"expected-statuses": [*DEFAULT, "412"]}},
}

positive = schemathesis.openapi.from_dict(
    json.loads(COMMITTED.read_text()),
    config=SchemathesisConfig.from_dict(
        {
            "generation": {"mode": "positive"},
            "checks": {"positive_data_acceptance": {"expected-statuses": DEFAULT}},
            "operations": [CONDITIONAL, CONDITIONAL_UPDATES],
        }
    ),
)
# On the embedded default; the fuzzer's run (test_openapi.py) is PostgreSQL's.
pytestmark = pytest.mark.one_backend("sqlite")
TOKEN: dict[str, str] = {}


@positive.auth(refresh_interval=None)
class BearerToken:
    def get(self, case: Any, context: Any) -> str:
        return TOKEN.get("token", "not-yet-known")

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _each_service_once(body: Any) -> None:
    """The one rule a JSON schema cannot state (`uniqueItems` covers identical entries
    only): a service name listed twice with two versions is refused."""
    services = body.get("services") if isinstance(body, dict) else None
    if isinstance(services, list):
        seen: set[Any] = set()
        body["services"] = [
            s for s in services if not (s.get("name") in seen or seen.add(s.get("name")))
        ]


@positive.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
def test_schema_valid_requests_are_accepted(case: Any, live_server: tuple[str, str]) -> None:
    base_url, TOKEN["token"] = live_server
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and IDEMPOTENCY_KEY.match(key):
        # A key names one request; reused for another body it is rightly refused (422).
        headers["Idempotency-Key"] = f"schemathesis-{uuid.uuid4()}"
    if case.path == "/v1/deployments" and case.method == "POST":
        _each_service_once(case.body)
    if case.path == "/v1/tokens" and isinstance(case.body, dict):
        global_scoped_token(case.body)
    if case.path.startswith("/v1/webhooks") and isinstance(case.body, dict):
        # Where a destination resolves, which event types are registered: the server's
        # knowledge, not the schema's.
        webhook_destination(case.body, creating=case.method == "POST")
    if isinstance(case.body, dict):
        # Which services exist, how a threshold's levels and severities rank.
        status_rules(case.path, case.body)
        # Docker host names distinct; a service's docker_host among its environment's.
        environment_rules(case.path, case.body)
    if case.path.startswith("/v1/maintenances") and isinstance(case.body, dict):
        # Which components and environments exist, and a span that ends after it starts.
        maintenance_window(case.body)
    if case.path.startswith("/v1/schedules") and isinstance(case.body, dict):
        # Which runbooks exist and what they take; cron and time zone by their rules.
        schedule_rules(case.body)
    case.call_and_validate(base_url=base_url, checks=[positive_data_acceptance])


# -- the rules that once lived only in validators, now stated in the schema ---------------

SHORTHANDS = re.compile(r"\\[sSdDwWbB]")


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            elif key == "patternProperties" and isinstance(value, dict):
                yield from value
            yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def test_patterns_are_dialect_neutral() -> None:
    """`\\s`, `\\d`, `\\w`, `\\b` mean more characters in Python's `re` than in the
    schema's ECMA-262 regexes: every pattern spells its classes out."""
    document = json.loads(COMMITTED.read_text())
    patterns = set(_patterns(document))
    assert patterns
    assert [p for p in patterns if SHORTHANDS.search(p)] == []


def _documented(name: str) -> Any:
    """A validator of the committed document's schema ``name``."""
    document = json.loads(COMMITTED.read_text())
    text = json.dumps({"$defs": document["components"]["schemas"], "$ref": f"#/$defs/{name}"})
    return jsonschema_rs.Draft202012Validator(
        json.loads(text.replace("#/components/schemas/", "#/$defs/"))
    )


def _accepted(adapter: TypeAdapter[Any], value: Any) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


DEPLOYMENT: TypeAdapter[Any] = TypeAdapter(DeploymentRequest)
SERVICE_IN = service_schemas(build_registry()[DRIVERS]).adapter
PROCESS = {"command": ["{python}", "-m", "app.embedded.sample_service"]}
DEPLOY = {"environment": "prod"}
CASES: list[tuple[str, TypeAdapter[Any], Any]] = [
    ("ProcessConfig", TypeAdapter(ProcessConfig), {**PROCESS, "port": 8000}),
    ("ProcessConfig", TypeAdapter(ProcessConfig), {"command": ["app", "--port={port}"]}),
    ("ProcessConfig", TypeAdapter(ProcessConfig), {**PROCESS, "env": {"PORT": "{port}"}}),
    (
        "ProcessConfig",
        TypeAdapter(ProcessConfig),
        {**PROCESS, "port": None, "env": {"PORT": "{port}"}},
    ),
    ("ProcessConfig", TypeAdapter(ProcessConfig), {"command": ["app", "{port}"], "port": 80}),
    ("DockerConfig", TypeAdapter(DockerConfig), {"image": "nginx", "labels": {"team": "a"}}),
    (
        "DockerConfig",
        TypeAdapter(DockerConfig),
        {"image": "nginx", "labels": {"formula-ops.x": ""}},
    ),
    ("DockerConfig", TypeAdapter(DockerConfig), {"image": "nginx", "labels": {"formula-opsx": ""}}),
    *[
        ("ProcessService", SERVICE_IN, {"driver": "process", "config": PROCESS, "health_url": url})
        for url in (
            "http://a/\x1fb",  # Python's \s, not ECMA's
            "http://a/\x85b",  # Python's \s, not ECMA's
            "http://a/\ufeffb",  # ECMA's \s, not Python's
            "http://a/\xa0b",
            "http://a/ b",
            "https://a/b?c=d#e",
        )
    ],
    ("DeploymentRequest", DEPLOYMENT, {**DEPLOY, "service": "api", "version": "1"}),
    ("DeploymentRequest", DEPLOYMENT, {**DEPLOY, "service": "api"}),
    ("DeploymentRequest", DEPLOYMENT, {**DEPLOY, "services": [{"name": "api", "version": "1"}]}),
    (
        "DeploymentRequest",
        DEPLOYMENT,
        {**DEPLOY, "services": [{"name": "api", "version": "1"}], "service": "api", "version": "1"},
    ),
    ("DeploymentRequest", DEPLOYMENT, {**DEPLOY, "services": [{"name": "a", "version": "1"}] * 2}),
    ("DeploymentRequest", DEPLOYMENT, {**DEPLOY, "services": []}),
    ("DeploymentRequest", DEPLOYMENT, DEPLOY),
]


@pytest.mark.parametrize(("name", "adapter", "value"), CASES)
def test_the_schema_and_the_server_agree(name: str, adapter: TypeAdapter[Any], value: Any) -> None:
    if name == "DeploymentRequest":  # the request body of createDeployment
        document = json.loads(COMMITTED.read_text())
        body = document["paths"]["/v1/deployments"]["post"]["requestBody"]
        variants = [
            r["$ref"].rsplit("/", 1)[1]
            for r in body["content"]["application/json"]["schema"]["oneOf"]
        ]
        documented = sum(_documented(v).is_valid(value) for v in variants) == 1
    else:
        documented = _documented(name).is_valid(value)
    assert documented == _accepted(adapter, value)
