"""Sequences of requests along the OpenAPI links: what one answer creates, the next
request reads, changes, cancels or deletes (schemathesis's state machine).

The links are the committed document's own (app/openapi_links.py); schemathesis's
guesses from names are turned off, so a link the document lacks is a request never
chained. Every operation but the three that take and name nothing takes part in a link,
so the state machine calls each one; it runs until every one was called
`FORMULA_OPS_FUZZ_EXAMPLES` times (1,000 times in `make fuzz`; the stateless run of
test_openapi.py gives each operation its 30 examples). In the suite it plays at least
`FORMULA_OPS_STATEFUL_SCENARIOS` scenarios (100: examples of the state machine, as
schemathesis's `--max-examples` counts them in its stateful phase; each a chain of up to
50 linked requests), in runs of 20, and more runs while more than one operation in 20 still
misses its one call (the rarest chains are long; 10 runs at most), against a real uvicorn
server on PostgreSQL with an admin token and every check, the
stateful ones too (a deleted resource stays gone, a created one can be read). The calls
per operation are printed, with how many of them were answered 2xx.

No worker runs: a run, deployment or backup stays queued (cancelling one ends it). Rules
that depend on what exists (a runbook's parameters, an endpoint's kind) are applied as
the stateless run applies the schema's unwritten ones.

Time bound: 2 to 3 minutes on two cores (20 to 25 s a run of 20 scenarios on quiet
cores, twice that on loaded ones), on one of the two workers; it starts first. 900 s at
most.
"""

from __future__ import annotations

import copy
import os
import re
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import use_after_free

from app.bootstrap import build_registry
from app.runbooks.catalog import load_catalog
from tests.helpers import RUNBOOKS
from tests.test_openapi import (
    ALL_CHECKS,
    BEARER,
    DOCUMENT,
    BearerToken,
    live_server,
    prepare,
    with_edge_text,
)

__all__ = ["live_server"]  # the fixture, shared with the other schemathesis tests

CALLS_PER_OPERATION = int(os.environ.get("FORMULA_OPS_FUZZ_EXAMPLES", "1"))
FUZZING = "FORMULA_OPS_FUZZ_EXAMPLES" in os.environ
ROUNDS = 10  # state machine runs in the suite at most (20 scenarios of up to 50 steps each)
SCENARIOS = int(os.environ.get("FORMULA_OPS_STATEFUL_SCENARIOS", "100"))  # in the suite, at least
PREFER_WAIT = re.compile(r"wait", re.IGNORECASE)

stateful = schemathesis.openapi.from_dict(
    copy.deepcopy(DOCUMENT),
    # The document's links only: no links guessed from parameter and field names.
    config=SchemathesisConfig.from_dict(
        {"phases": {"stateful": {"inference": {"algorithms": []}}}}
    ),
)
stateful.auth(refresh_interval=None)(BearerToken)


@stateful.hook
def flatmap_case(context: Any, case: Any) -> Any:
    """Edge characters as in the stateless run, but not in path parameters: those carry
    the ids a link took from an earlier answer."""
    return with_edge_text(case, ("body", "query"))


pytestmark = pytest.mark.one_backend("postgres")

# Operations that take nothing and name nothing: no link has a value to carry to or from
# them (the stateless run calls them).
UNLINKED = {"GET /health", "GET /ready", "GET /metrics"}
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if f"{method.upper()} {path}" not in UNLINKED
)


def _positive(case: Any) -> bool:
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


def endpoint_kind(case: Any, kinds: dict[str, str]) -> None:
    """A rule that depends on what exists: a webhook takes no channel fields, a channel
    no webhook fields (the endpoint's kind, from an earlier answer)."""
    kind = kinds.get(str((case.path_parameters or {}).get("webhook_id")))
    if not isinstance(case.body, dict) or kind is None:
        return
    for name in ("channel", "templates") if kind == "webhook" else ("url", "headers"):
        case.body.pop(name, None)
    if kind == "channel" and "format" in case.body:
        case.body["format"] = "standard"


def restore_rules(case: Any, databases: dict[str, str]) -> None:
    """Rules the schema states in words: `confirm` types out the database the backup
    restores over (from an earlier answer), and `force` comes with a reason."""
    if not isinstance(case.body, dict):
        return
    database = databases.get(str(case.body.get("backup_id")))
    if database is not None:
        case.body["confirm"] = database
    if case.body.get("force") is True:
        case.body["reason"] = "drill"


# A DELETE that keeps the record, as documented: a revoked token reads `revoked`, a
# deleted backup `deleted` (its stored object is gone).
KEPT_AFTER_DELETE = {"/v1/tokens/{token_id}", "/v1/backups/{backup_id}"}
CATALOG = load_catalog(RUNBOOKS.catalog_dirs, build_registry())


def runbook_parameters(case: Any) -> None:
    """A rule that depends on what exists: a runbook of the catalog takes its own
    parameters (its `GET /v1/runbooks/{name}`); each one's sample value here."""
    runbook = CATALOG.get(str((case.path_parameters or {}).get("name")))
    if runbook is None:
        return
    if not isinstance(case.body, dict):  # the body is optional; the parameters are not
        case.body = {}
        case.media_type = "application/json"
    if isinstance(case.body, dict):
        case.body["parameters"] = {
            name: parameter.sample() for name, parameter in runbook.spec.parameters.items()
        }


class Workflows(stateful.as_state_machine()):  # type: ignore[misc]
    base_url = ""
    calls: Counter[str] = Counter()
    answered: Counter[str] = Counter()  # 2xx answers: the chain got somewhere
    statuses: Counter[tuple[str, int]] = Counter()
    kinds: dict[str, str] = {}  # webhook endpoint id -> webhook | channel
    databases: dict[str, str] = {}  # backup id -> the database it restores over
    scenarios = 0  # played to their end, with at least one request sent
    sent = False

    def teardown(self) -> None:
        if self.sent:
            Workflows.scenarios += 1
        super().teardown()

    def before_call(self, case: Any) -> None:
        prepare(case)
        if _positive(case) and case.method == "PATCH" and case.path.startswith("/v1/webhooks/"):
            endpoint_kind(case, self.kinds)
        own = BEARER["token"].split("_")[1]
        if case.method == "DELETE" and (case.path_parameters or {}).get("token_id") == own:
            # Its own token revoked, the run would go on unauthenticated (its own tests).
            case.path_parameters["token_id"] = "0" * 16
        if _positive(case) and case.method == "POST" and case.path == "/v1/restores":
            restore_rules(case, self.databases)
        if _positive(case) and case.method == "POST" and case.path.startswith("/v1/runbooks/"):
            runbook_parameters(case)
        # Long polls answer when a run ends, and no worker runs here: a run taken from a
        # link would hold the request for the whole wait (the long poll has its tests).
        if isinstance(case.query, dict) and isinstance(case.query.get("wait"), int):
            case.query["wait"] = 0
        headers = case.headers or {}
        if isinstance(headers.get("Prefer"), str) and PREFER_WAIT.search(headers["Prefer"]):
            del headers["Prefer"]

    def get_call_kwargs(self, case: Any) -> dict[str, Any]:
        return {"base_url": self.base_url}

    def after_call(self, response: Any, case: Any) -> None:
        super().after_call(response, case)
        label = f"{case.method.upper()} {case.path}"
        self.sent = True
        self.calls[label] += 1
        self.statuses[label, response.status_code] += 1
        if 200 <= response.status_code < 300:
            self.answered[label] += 1
            remembered = case.path.startswith(("/v1/webhooks", "/v1/backups"))
            body = response.json() if remembered and response.status_code != 204 else None
            if isinstance(body, dict) and "id" in body and "kind" in body:
                self.kinds[body["id"]] = body["kind"]
            if isinstance(body, dict) and "id" in body and "database" in body:
                self.databases[body["id"]] = body["database"]

    def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
        checks = ALL_CHECKS
        if case.operation.path in KEPT_AFTER_DELETE:
            checks = [check for check in ALL_CHECKS if check is not use_after_free]
        case.validate_response(
            response, checks=checks, transport_kwargs=kwargs or None, recorder=self.recorder
        )


def test_every_operation_takes_part_in_a_link() -> None:
    """An operation no link reaches or leaves is not in the state machine at all."""
    linked = set()
    ids = {
        operation["operationId"]: f"{method.upper()} {path}"
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
    }
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for response in operation["responses"].values():
                for link in response.get("links", {}).values():
                    linked.add(f"{method.upper()} {path}")
                    linked.add(ids[link["operationId"]])
    assert sorted(set(OPERATIONS) - linked) == []


def _has(schema: dict[str, Any], pointer: list[str]) -> bool:
    """Whether a value at ``pointer`` is one ``schema`` describes."""
    while "$ref" in schema:
        schema = DOCUMENT["components"]["schemas"][schema["$ref"].rpartition("/")[2]]
    if not pointer:
        return True
    branches = schema.get("anyOf", schema.get("oneOf"))
    if branches:
        return any(_has(branch, pointer) for branch in branches)
    head, rest = pointer[0], pointer[1:]
    if head.isdigit():
        return "items" in schema and _has(schema["items"], rest)
    return head in schema.get("properties", {}) and _has(schema["properties"][head], rest)


def test_links_take_fields_the_answers_have() -> None:
    """A link's `$response.body#/…` names a field of its response's schema, and its
    `$request.path.…` a path parameter of its source (a renamed field breaks no chain
    silently)."""
    checked = 0
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                for name, link in response.get("links", {}).items():
                    values = [*link.get("parameters", {}).values()]
                    values += list(link.get("requestBody", {}).values())
                    for value in values:
                        where = (method, path, status, name, value)
                        if value.startswith("$response.body#/"):
                            schema = response["content"]["application/json"]["schema"]
                            assert _has(schema, value.split("#/")[1].split("/")), where
                        else:
                            assert value.startswith("$request.path."), where
                            parameter = value.removeprefix("$request.path.")
                            assert f"{{{parameter}}}" in path, where
                        checked += 1
    assert checked > 200


@pytest.mark.slow
@pytest.mark.early
@pytest.mark.timeout(0 if CALLS_PER_OPERATION > 1 else 900)
def test_linked_requests_keep_the_schemas_promises(live_server: tuple[str, str]) -> None:
    base_url, BEARER["token"] = live_server
    Workflows.base_url = base_url
    Workflows.calls.clear()
    Workflows.answered.clear()
    Workflows.scenarios = 0
    started = time.monotonic()
    settings = hypothesis_settings(
        max_examples=20,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
        database=None,
    )

    def missing() -> int:
        """Calls still missing to reach the target on every operation."""
        return sum(max(0, CALLS_PER_OPERATION - Workflows.calls[label]) for label in OPERATIONS)

    replays = stalled = rounds = 0
    short = missing()

    def short_ops() -> int:
        return sum(1 for label in OPERATIONS if Workflows.calls[label] < CALLS_PER_OPERATION)

    def in_budget() -> bool:
        """In the suite: runs start until SCENARIOS scenarios were played, or while more
        than one operation in 20 misses its call, and ROUNDS runs at most."""
        if rounds >= ROUNDS:
            return False
        return Workflows.scenarios < SCENARIOS or short_ops() > len(OPERATIONS) // 20

    # Until every operation had its calls, or 10 runs in a row brought none of the missing
    # ones (a rarely drawn chain counts as progress when it comes, however late).
    while (short or Workflows.scenarios < SCENARIOS) and stalled < 10 and (FUZZING or in_budget()):
        rounds += 1
        try:
            Workflows.run(settings=settings)
        except FlakyStrategyDefinition:
            # A replay met a server that has changed since (what the API holds decides
            # which requests can follow): the scenarios so far ran; start new ones.
            replays += 1
        left = missing()
        print(
            f"run {rounds}: {time.monotonic() - started:.0f} s, {Workflows.scenarios} "
            f"scenarios, {left} calls missing"
        )
        stalled = 0 if left < short else stalled + 1
        short = left
    print(f"\nstate machine runs cut short by a changed server: {replays}")
    elapsed = time.monotonic() - started
    calls = Workflows.calls
    print(f"\n{Workflows.scenarios} scenarios, {sum(calls.values())} calls in {elapsed:.0f} s")
    for label in OPERATIONS:
        print(f"{calls[label]:6d} {Workflows.answered[label]:6d} {label}")
    if os.environ.get("FORMULA_OPS_STATEFUL_STATUSES"):
        for (label, status), count in sorted(Workflows.statuses.items()):
            print(f"{count:6d} {status} {label}")
    unreached = {label: calls[label] for label in OPERATIONS if calls[label] < CALLS_PER_OPERATION}
    print(f"operations short of {CALLS_PER_OPERATION} calls: {sorted(unreached)}")
    if FUZZING:
        assert unreached == {}
    else:
        assert Workflows.scenarios >= SCENARIOS, Workflows.scenarios
        # The longest chains are drawn rarely: within the suite's rounds a few operations
        # may miss their call (`make fuzz` runs until every one has its calls).
        assert len(unreached) <= len(OPERATIONS) // 20, unreached
