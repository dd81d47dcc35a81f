"""A request the schema allows is not refused: schemathesis's positive-data check.

Only schema-valid requests are generated, with no rewriting of the parts the schema
declares (cursors, `If-Match`, the two forms of a deployment request, URLs), against a
real uvicorn server on each backend (the `live_server` of tests/test_openapi.py).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.test_openapi import COMMITTED, IDEMPOTENCY_KEY, live_server

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

positive = schemathesis.openapi.from_dict(
    json.loads(COMMITTED.read_text()),
    config=SchemathesisConfig.from_dict(
        {
            "generation": {"mode": "positive"},
            "checks": {"positive_data_acceptance": {"expected-statuses": DEFAULT}},
            "operations": [CONDITIONAL],
        }
    ),
)
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
    max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
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
    case.call_and_validate(base_url=base_url, checks=[positive_data_acceptance])
