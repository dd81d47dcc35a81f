"""The event catalog is complete and true: every type the code writes is registered
(read from the source), every event real flows write is registered and its data
validates against its model and its OpenAPI schema, its links lead somewhere; events
over the size cap are refused at write time; patterns select registered types only."""

from __future__ import annotations

import ast
import asyncio
import json
from typing import Any

import httpx
import jsonschema_rs
import pytest
from sqlalchemy import func, select

from app.bootstrap import build_registry
from app.cli.admin import render_openapi
from app.core.context import AppContext
from app.core.registry import Catalog, Registry
from app.models import OutboxEvent, Run
from app.outbox.catalog import EVENT_TYPES, EventType, is_valid_name, matches, validate_pattern
from app.outbox.service import MAX_EVENT_BYTES, EventTooLarge, add_event
from app.runs import kinds
from app.runs import service as run_service
from app.runs.models import RunKind, RunStatus
from app.runs.service import StepSpec
from tests.deployments.conftest import Env
from tests.factories import IssuedToken, app_with
from tests.helpers import REPO_ROOT, free_port

# The catalog is the same on either database; PostgreSQL's JSON here.
pytestmark = pytest.mark.one_backend("postgres")

APP = REPO_ROOT / "app"
WAIT = {"Prefer": "wait=60"}
# The domains whose events this file drives through real flows.
DRIVEN = ("run.", "deployment.", "health_check.")
# Registered types sent without an outbox row (none yet).
NOT_FROM_THE_OUTBOX: frozenset[str] = frozenset()


def catalog() -> Catalog[EventType]:
    return build_registry()[EVENT_TYPES]


# -- patterns --------------------------------------------------------------------------


def test_patterns_select_exact_types_families_or_everything() -> None:
    assert matches("deployment.succeeded", "deployment.succeeded")
    assert not matches("deployment.succeeded", "deployment.failed")
    assert matches("deployment.*", "deployment.failed")
    assert not matches("deployment.*", "deployments.failed")
    assert not matches("deployment.*", "run.queued")
    assert matches("*", "run.queued")


def test_a_pattern_that_selects_nothing_is_refused() -> None:
    types = catalog()
    for pattern in ("*", "deployment.*", "run.queued", "health_check.failed"):
        validate_pattern(pattern, types)
    refused = {
        "deployment.exploded": "not a registered event type",
        "postcard.*": "no registered event type matches",
        "deploy*": "not an event type pattern",
        "*.failed": "not an event type pattern",
        "deployment": "not an event type pattern",
        "": "not an event type pattern",
    }
    for pattern, message in refused.items():
        with pytest.raises(ValueError, match=message):
            validate_pattern(pattern, types)


# -- the catalog itself ----------------------------------------------------------------


def test_every_entry_is_named_summarised_and_exemplified() -> None:
    types = catalog()
    assert len(types) >= 10
    for name, event in types.items():
        assert event.name == name
        assert is_valid_name(name), name
        assert event.summary, name
        assert "\n" not in event.summary, name
        assert event.example is not None, f"{name} has no example"
        event.data.model_validate(event.example)
        assert event.data.model_config.get("extra") == "forbid", name


def _add_event_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted(APP.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func_name = getattr(node.func, "attr", getattr(node.func, "id", None))
                if func_name == "add_event":
                    calls.append((f"{path.relative_to(REPO_ROOT)}:{node.lineno}", node))
    return calls


def _end_types(registry: Registry) -> set[str]:
    """What the end of a run of each registered kind is announced as: every kind can
    succeed, fail (``failure`` or ``error``) and be cancelled; a kind that says so
    (``rolls_back``: deployments) can end rolled back. A kind whose own events say how
    it ended (``announce=False``: backups) is not announced at all."""
    types = set()
    for kind in kinds.registered(registry):
        if not kinds.hooks(registry, kind).announce:
            continue
        statuses = [RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.ERROR, RunStatus.CANCELLED]
        if kinds.hooks(registry, kind).rolls_back:
            statuses.append(RunStatus.ROLLED_BACK)
        run = Run(id="r", kind=kind.value, environment=None)
        types |= {run_service.finish_announcement(run, s, None)[0] for s in statuses}
    return types


def test_every_type_the_code_writes_is_registered_and_nothing_else() -> None:
    """Read from the source: each ``add_event`` call passes a literal type, or a run's
    end announcement (:func:`app.runs.service.finish_announcement`)."""
    registry = build_registry()
    written: set[str] = set()
    announcements = 0
    calls = _add_event_calls()
    for where, call in calls:
        if where.startswith("app/outbox/"):
            continue
        starred = [a for a in call.args if isinstance(a, ast.Starred)]
        if starred:
            inner = starred[0].value
            assert isinstance(inner, ast.Call), where
            name = getattr(inner.func, "attr", getattr(inner.func, "id", None))
            assert name == "finish_announcement", f"{where}: add_event(*{ast.unparse(inner)})"
            announcements += 1
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        node = keywords.get("type", call.args[1] if len(call.args) > 1 else None)
        found = ast.unparse(node) if node is not None else "nothing"
        literal = node.value if isinstance(node, ast.Constant) else None
        assert isinstance(literal, str), (
            f"{where}: the event type must be a literal string (found {found}), "
            "so it can be checked here"
        )
        written.add(literal)
    assert announcements == 2  # the engine's end of a run and the service's (cancel)
    assert {"run.queued", "deployment.queued", "deployment.started"} <= written
    written |= _end_types(registry)
    registered = set(registry[EVENT_TYPES].names())
    missing = sorted(written - registered)
    assert not missing, f"written but not in the event catalog: {missing}"
    stale = sorted(registered - written - NOT_FROM_THE_OUTBOX)
    assert not stale, f"in the event catalog but never written: {stale}"


# -- the size cap ----------------------------------------------------------------------


def _blob(size: int, char: str = "x") -> dict[str, Any]:
    """Data whose compact UTF-8 JSON is ``size`` bytes (``char``: 1 or 2 bytes)."""
    overhead = len('{"blob":""}')
    return {"blob": char * ((size - overhead) // len(char.encode()))}


async def test_an_event_over_256_kib_is_refused_and_nothing_is_written(
    context: AppContext,
) -> None:
    assert MAX_EVENT_BYTES == 256 * 1024
    async with context.unit_of_work() as uow:  # the cap itself is allowed
        await add_event(uow.session, "test.at_the_cap", _blob(MAX_EVENT_BYTES))
    for data in (_blob(MAX_EVENT_BYTES + 1), _blob(MAX_EVENT_BYTES + 2, "é")):
        with pytest.raises(EventTooLarge, match=r"more than the 262144 an event may carry"):
            async with context.unit_of_work() as uow:
                await run_service.create_run(
                    uow,
                    context,
                    kind=RunKind.HEALTH_CHECK,
                    steps=[StepSpec("pause", "wait", {"seconds": 0})],
                    requested_by="tests",
                )
                await add_event(uow.session, "test.too_large", data)
    assert len("é" * (MAX_EVENT_BYTES // 2)) < MAX_EVENT_BYTES  # bytes are counted
    async with context.sessionmaker() as session:
        types = list(await session.scalars(select(OutboxEvent.type)))
        runs = await session.scalar(select(func.count()).select_from(Run))
    assert types == ["test.at_the_cap"]  # the refused ones' transactions wrote nothing
    assert runs == 0


# -- the OpenAPI document's webhooks ---------------------------------------------------


def _body_validator(document: dict[str, Any], type: str) -> Any:
    operation = document["webhooks"][type]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for(
        {**schema, "components": document["components"]}, validate_formats=True
    )


def test_the_webhooks_of_the_openapi_document_are_the_catalog() -> None:
    document = json.loads(render_openapi())
    types = catalog()
    assert document["openapi"].startswith("3.1")
    assert list(document["webhooks"]) == list(types.names())
    for name, event in types.items():
        operation = document["webhooks"][name]["post"]
        assert operation["summary"] == event.summary
        for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            assert header in operation["description"]
            assert header in [p["name"] for p in operation["parameters"]]
        media = operation["requestBody"]["content"]["application/json"]
        assert media["schema"]["properties"]["type"] == {"type": "string", "const": name}
        validator = _body_validator(document, name)
        validator.validate(media["example"])
        assert media["example"]["data"] == event.example
        other = next(n for n in types.names() if n != name)
        assert not validator.is_valid({**media["example"], "type": other})
        assert not validator.is_valid({**media["example"], "data": {**event.example, "x": 1}})


# -- real flows ------------------------------------------------------------------------


def _checks(port: int | None) -> dict[str, Any]:
    """Health check settings: the deployed services, memory, database, Redis and, with
    ``port``, a service nothing answers on (critical)."""
    services = [{"name": "down", "url": f"http://127.0.0.1:{port}/health"}] if port else []
    return {"health_check": {"services": services, "disk_paths": [], "log_files": []}}


async def _deploy(
    client: httpx.AsyncClient, token: IssuedToken, version: str, **body: Any
) -> dict[str, Any]:
    payload = {"environment": "staging", "service": "backend", "version": version, **body}
    response = await client.post(
        "/v1/deployments", json=payload, headers={**token.headers, **WAIT}, timeout=90
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.slow
async def test_every_event_real_flows_write_is_registered_valid_and_linked(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    deployer: IssuedToken,
    staging: Env,
) -> None:
    from workers.main import create_worker, stop_worker

    # Before any worker: a queued health check and a queued deployment, cancelled.
    checks = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_with(context, **_checks(None))),
        base_url="http://testserver",
    )
    async with checks:
        queued = await checks.post("/v1/health-checks", headers=admin.headers)
        assert queued.status_code == 202, queued.text
        cancel = await checks.post(f"/v1/runs/{queued.json()['id']}/cancel", headers=admin.headers)
        assert cancel.json()["status"] == "cancelled"
    waiting = await client.post(
        "/v1/deployments",
        json={"environment": "staging", "service": "backend", "version": "1.0.0"},
        headers=deployer.headers,
    )
    assert waiting.status_code == 202, waiting.text
    cancel = await client.post(
        f"/v1/deployments/{waiting.json()['id']}/cancel", headers=deployer.headers
    )
    assert cancel.status_code < 300, cancel.text

    worker = create_worker(context.settings, handle_signals=False, poll_delay=0.02)
    task = asyncio.create_task(worker.main())
    try:
        assert (await _deploy(client, deployer, "1.1.0", ref="abc123"))["status"] == "success"
        broken = await _deploy(client, deployer, "1.2.0-broken")
        assert broken["status"] == "rolled_back"
        for port in (None, free_port()):
            app = app_with(context, **_checks(port))
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as http:
                done = await http.post("/v1/health-checks", headers={**admin.headers, **WAIT})
            assert done.json()["status"] == ("failure" if port else "success"), done.text
        kept = await _deploy(client, deployer, "1.3.0-broken", auto_rollback=False)
        assert kept["status"] == "failure"
    finally:
        await stop_worker(worker, task)

    async with context.sessionmaker() as session:
        rows = list(await session.scalars(select(OutboxEvent).order_by(OutboxEvent.created_at)))
    types = catalog()
    document = json.loads(render_openapi())
    seen: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        assert row.type in types, f"{row.type} is written but not registered"
        types.get(row.type).data.model_validate(row.data)
        body = {"type": row.type, "timestamp": row.created_at.isoformat(), "data": row.data}
        _body_validator(document, row.type).validate(body)
        for link in row.data["links"].values():
            response = await client.get(link, headers=admin.headers)
            assert response.status_code == 200, (row.type, link)
            assert response.json()["id"] == row.data["id"]
        seen.setdefault(row.type, []).append(row.data)
    # The flows write every type of the domains they drive.
    assert set(seen) == {n for n in types.names() if n.startswith(DRIVEN)}
    assert len(seen["run.queued"]) == 7
    (rolled_back,) = seen["deployment.rolled_back"]
    assert rolled_back["services"] == [{"name": "backend", "version": "1.2.0-broken"}]
    assert rolled_back["failure_type"] == "/problems/health-check-failed"
    assert rolled_back["links"]["self"] == f"/v1/deployments/{broken['id']}"
    (succeeded,) = seen["deployment.succeeded"]
    assert succeeded["ref"] == "abc123"
    (failed,) = seen["deployment.failed"]
    assert failed["status"] == "failure"
    (cancelled,) = seen["health_check.cancelled"]
    assert cancelled["summary"] is None
    (healthy,) = seen["health_check.succeeded"]
    assert healthy["summary"]["overall"] in ("ok", "warning")
    (unhealthy,) = seen["health_check.failed"]
    assert unhealthy["summary"]["critical"] == ["service down"]
    assert unhealthy["links"]["self"].startswith("/v1/health-checks/")
