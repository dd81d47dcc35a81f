"""Acceptance: injection payloads in every parameter of every runbook of the catalog run
nothing. A parameter reaches a step only as a whole value (an argv element, a bind
parameter, an API argument); a payload the parameter's type or pattern refuses is a 422,
and one it accepts is executed as data by a real worker. A canary file that a shell
injection would create and a canary table that a SQL injection would drop prove that
nothing ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.roles import Role
from app.core.context import AppContext
from app.runbooks.catalog import RunbookCatalog, catalog_of
from app.runbooks.spec import BooleanParameter, IntegerParameter, StringParameter
from tests.factories import issue_token
from tests.runbook_actions.conftest import add_environment, canary_rows

# What the control plane runs on does not change how parameters reach steps.
pytestmark = [pytest.mark.one_backend("postgres"), pytest.mark.usefixtures("worker")]

ENVIRONMENT = "inject"


def string_payloads(canary: Path) -> list[str]:
    return [
        f"; touch {canary}",
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"x && touch {canary} #",
        f"x\ntouch {canary}",
        f"| touch {canary}",
        "' OR '1'='1'; DROP TABLE canary; --",
        "1); DROP TABLE canary; --",
        f"x; COPY canary TO PROGRAM 'touch {canary}'",
        f"{canary.parent}/../../{canary.name}",
        f"{canary.parent}/*",
        "%(x)s :x {param: environment} ${HOME}",
        "-rf",
        "--help",
    ]


INTEGER_PAYLOADS: list[Any] = ["1; DROP TABLE canary", "1 OR 1=1", 1.5, True, "7", None, [1]]
BOOLEAN_PAYLOADS: list[Any] = ["true; rm -rf /", "yes", 1, 0, "false", None]


def base_parameters(spec: Any, folder: Path) -> dict[str, Any]:
    """A valid value for each parameter: the environment under test, a folder the
    server allows, else the parameter's sample value."""
    values: dict[str, Any] = {}
    for name, parameter in spec.parameters.items():
        if name == "environment":
            values[name] = ENVIRONMENT
        elif isinstance(parameter, StringParameter) and parameter.pattern == "^/[^\\x00]{0,499}$":
            values[name] = str(folder)
        else:
            values[name] = parameter.sample()
    return values


def whole_values(value: Any, payload: str) -> bool:
    """Whether every string of ``value`` holding ``payload`` is exactly it."""
    if isinstance(value, dict):
        return all(whole_values(v, payload) for v in value.values())
    if isinstance(value, list):
        return all(whole_values(v, payload) for v in value)
    if isinstance(value, str) and payload in value:
        return value == payload
    return True


@pytest.fixture
async def catalog(context: AppContext) -> RunbookCatalog:
    return catalog_of(context)


async def test_no_parameter_of_any_runbook_injects(
    client: httpx.AsyncClient,
    context: AppContext,
    catalog: RunbookCatalog,
    scratch_pg: str,
    tmp_path: Path,
) -> None:
    canary = tmp_path / "canary"
    folder = tmp_path / "logs"
    folder.mkdir()
    await add_environment(context, ENVIRONMENT, scratch_pg)
    admin = await issue_token(context, Role.ADMIN)
    headers = {**admin.headers, "Prefer": "wait=120"}
    runbooks = [r for r in catalog.runbooks() if not r.name.startswith("test-")]
    assert len(runbooks) >= 10
    tried = refused = executed = 0
    for runbook in runbooks:
        base = base_parameters(runbook.spec, folder)
        path = f"/v1/runbooks/{runbook.name}/runs"
        for name, parameter in runbook.spec.parameters.items():
            payloads: list[Any]
            if isinstance(parameter, StringParameter):
                payloads = string_payloads(canary)
            elif isinstance(parameter, IntegerParameter):
                payloads = INTEGER_PAYLOADS
            else:
                assert isinstance(parameter, BooleanParameter)
                payloads = BOOLEAN_PAYLOADS
            for payload in payloads:
                tried += 1
                body = {"parameters": {**base, name: payload}}
                dry = await client.post(path, json={**body, "dry_run": True}, headers=headers)
                if dry.status_code in (404, 422):
                    refused += 1
                    assert dry.headers["content-type"] == "application/problem+json"
                    continue
                assert dry.status_code == 200, (runbook.name, name, payload, dry.text)
                assert isinstance(payload, str), (runbook.name, name, payload)
                for step in dry.json()["steps"]:
                    assert whole_values(step["params"], payload), (runbook.name, step)
                ran = await client.post(path, json=body, headers=headers)
                assert ran.status_code in (201, 202), (runbook.name, name, payload, ran.text)
                executed += 1
    print(f"{tried} payloads: {refused} refused, {executed} executed as data")
    assert executed > 0  # some free-text parameters did run, as data
    assert not canary.exists(), "a payload ran a shell command"
    assert canary_rows(scratch_pg) == [(1, "alpha"), (2, "beta")]
