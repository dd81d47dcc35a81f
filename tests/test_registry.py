"""Registration at the composition root: what the domains contribute is registered by
app.bootstrap, looked up by the engine, and nothing runs that nothing registered."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from app.backups import operations as backup_operations
from app.backups import restores as restore_plan
from app.backups.models import Backup
from app.bootstrap import REGISTRATIONS, build_context, build_registry
from app.core.context import AppContext
from app.core.errors import ValidationFailed
from app.core.registry import (
    AlreadyRegistered,
    CatalogKey,
    NotRegistered,
    Registry,
    RegistryFrozen,
)
from app.core.settings import HealthCheckSettings, Settings
from app.deployments import plan as deployment_plan
from app.drivers.base import DRIVERS, Driver, DriverSettings, DriverType
from app.drivers.pool import DriverPool, drivers
from app.environments.models import Environment, Service
from app.environments.schemas import service_schemas
from app.environments.service import HOLDS
from app.health_checks import plan as health_check_plan
from app.main import create_app
from app.outbox.catalog import EVENT_TYPES
from app.runbooks.catalog import load_catalog, substitute
from app.runs import engine
from app.runs import service as run_service
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome
from app.runs.kinds import KINDS, registered
from app.runs.models import RunKind, RunStatus, Step, StepStatus
from app.runs.service import StepSpec
from tests.helpers import REPO_ROOT, RUNBOOKS

THINGS: CatalogKey[str] = CatalogKey("thing")

# -- the registry type -----------------------------------------------------------------


def test_a_catalog_refuses_a_name_twice_and_keeps_the_order() -> None:
    registry = Registry()
    registry[THINGS].add("b", "first")
    registry[THINGS].add("a", "second")
    with pytest.raises(AlreadyRegistered, match="thing 'b' is already registered"):
        registry[THINGS].add("b", "again")
    assert registry[THINGS].names() == ("b", "a")
    assert registry[THINGS].get("b") == "first"


def test_an_unregistered_name_says_what_and_which() -> None:
    registry = Registry()
    registry[THINGS].add("known", "x")
    with pytest.raises(NotRegistered) as caught:
        registry[THINGS].get("ghost")
    assert str(caught.value) == "no thing 'ghost' is registered (registered: known)"
    assert registry[THINGS].find("ghost") is None


def test_the_built_registry_is_frozen() -> None:
    registry = build_registry()
    assert registry.frozen
    noop = Action(Params, _noop, idempotent=True)
    with pytest.raises(RegistryFrozen, match="cannot register step action 'late'"):
        registry[ACTIONS].add("late", noop)
    with pytest.raises(RegistryFrozen):  # a catalog nothing filled is read-only too
        registry[THINGS].add("late", "x")
    assert registry[THINGS].names() == ()


def test_each_build_is_independent_and_registers_everything_once() -> None:
    first, second = build_registry(), build_registry()
    assert first[ACTIONS] is not second[ACTIONS]
    assert first[ACTIONS].names() == second[ACTIONS].names()
    registry = Registry()
    for register in REGISTRATIONS:
        register(registry)
    with pytest.raises(AlreadyRegistered):  # a registration called twice is refused
        REGISTRATIONS[0](registry)


def test_what_the_domains_register() -> None:
    registry = build_registry()
    assert [kind.value for kind in registered(registry)] == [
        "deployment",
        "rollback",
        "backup",
        "backup_verification",
        "restore",
        "health_check",
        "maintenance",
        "playbook",
    ]
    assert registry[DRIVERS].names() == ("process", "docker")
    assert registry[HOLDS].names() == ("deployments",)
    assert set(registry[ACTIONS].names()) == {
        *("http", "shell", "wait"),
        *("disk", "memory", "log_errors", "database", "redis", "backup_age"),
        *("checklist", "backup_database", "pull", "deploy", "verify", "rollback_service"),
        *("backup_take", "backup_checksum", "backup_drill"),
        *("restore_check", "restore_safety_backup", "restore_stop_services"),
        *("restore_database", "restore_start_services", "restore_verify_health"),
        *("sql", "approval", "notify"),
        *("health_check", "backup", "deployment", "backup_retention"),
        *("security_log_scan", "redis_info", "load_probe", "file_cleanup", "access_review"),
        "docker",
    }
    assert set(registry[EVENT_TYPES].names()) == {
        "run.queued",
        *("health_check.succeeded", "health_check.failed", "health_check.cancelled"),
        *("deployment.queued", "deployment.started", "deployment.succeeded"),
        *("deployment.failed", "deployment.rolled_back", "deployment.cancelled"),
        *("webhook.test", "webhook_endpoint.disabled"),
        "component.status_changed",
        *("incident.created", "incident.updated", "incident.resolved"),
        *("incident.sla_warning", "incident.sla_breached"),
        *("maintenance.scheduled", "maintenance.started", "maintenance.completed"),
        *("backup.succeeded", "backup.failed", "backup.verified"),
        *("backup.verification_failed", "backup.deleted"),
        *("restore.started", "restore.succeeded", "restore.failed", "restore.cancelled"),
        *("runbook.succeeded", "runbook.failed", "runbook.cancelled"),
        *("runbook.approval_requested", "runbook.approval_decided", "runbook.notification"),
        "security.suspicious_activity",
        *("schedule.missed", "schedule.failed"),
    }


# -- every action a registered kind plans is registered --------------------------------


def _environment() -> tuple[Environment, list[deployment_plan.PlannedTarget]]:
    environment = Environment(name="prod", database="main", required_checklist=["code_review"])
    smoke = [
        {"name": "home", "type": "http", "url": "http://127.0.0.1:9/"},
        {"name": "cli", "type": "command", "argv": ["true"]},
    ]
    services = [
        Service(
            environment="prod",
            name=name,
            driver=driver,
            config=config,
            health_url="http://127.0.0.1:9/health",
            health_timeout_seconds=5.0,
            deploy_order=order,
            settle_seconds=0.0,
            smoke_tests=smoke,
        )
        for order, (name, driver, config) in enumerate(
            [
                ("api", "process", {"command": ["true"]}),
                ("web", "docker", {"image": "nginx"}),
            ]
        )
    ]
    return environment, [deployment_plan.PlannedTarget(s, "1.0.0") for s in services]


def _deployment_steps() -> list[StepSpec]:
    environment, targets = _environment()
    return deployment_plan.plan(environment, targets, checklist=["code_review"], backup=True)


def _rollback_steps() -> list[StepSpec]:
    environment, targets = _environment()
    return deployment_plan.plan(
        environment, targets, checklist=[], backup=False, rollback_of="run-1"
    )


def _health_check_steps() -> list[StepSpec]:
    settings = Settings(
        health_check=HealthCheckSettings(log_files=["/var/log/syslog"], disk_paths=["/"])
    )
    return health_check_plan.plan(settings, [("prod/api", "http://127.0.0.1:9/health")])


def _restore_steps() -> list[StepSpec]:
    environment, targets = _environment()
    backup = Backup(id="backup-1", database="main")
    services = [t.service for t in targets]
    return restore_plan.steps_for(backup, environment, services, long_timeout=3600)


def _runbook_steps(kind: str) -> list[StepSpec]:
    """Every step of every runbook of ``kind`` in the shipped and the tests' catalogs, with
    each parameter's sample value and every conditional step planned."""
    catalog = load_catalog(RUNBOOKS.catalog_dirs, build_registry())
    steps: list[StepSpec] = []
    for runbook in catalog.runbooks():
        if runbook.spec.kind != kind:
            continue
        values = {name: p.sample() for name, p in runbook.spec.parameters.items()}
        for step in runbook.spec.steps:
            arguments = substitute(step.with_, values)
            steps.append(StepSpec(step.name, step.action, arguments))
    return steps


# The dry-run plan of every registered kind: a kind registered without a plan here fails
# the test below (add its plan).
PLANS: dict[str, Callable[[], list[StepSpec]]] = {
    RunKind.DEPLOYMENT.value: _deployment_steps,
    RunKind.ROLLBACK.value: _rollback_steps,
    RunKind.HEALTH_CHECK.value: _health_check_steps,
    RunKind.BACKUP.value: lambda: backup_operations.backup_steps(Settings()),
    RunKind.BACKUP_VERIFICATION.value: lambda: backup_operations.verification_steps(
        Settings(), "backup-1"
    ),
    RunKind.RESTORE.value: _restore_steps,
    RunKind.MAINTENANCE.value: lambda: _runbook_steps("maintenance"),
    RunKind.PLAYBOOK.value: lambda: _runbook_steps("playbook"),
}


def test_every_action_a_registered_kind_plans_is_registered() -> None:
    registry = build_registry()
    assert set(PLANS) == set(registry[KINDS].names())
    for kind, make in PLANS.items():
        steps = make()
        missing = sorted({s.action for s in steps} - set(registry[ACTIONS].names()))
        assert not missing, f"{kind} plans unregistered actions {missing}"
        # And each step's parameters are what its action accepts.
        assert len(run_service.validate_plan(registry, steps)) == len(steps)
    actions = {s.action for make in PLANS.values() for s in make()}
    assert {"pull", "deploy", "verify", "rollback_service", "disk", "redis"} <= actions


def test_a_plan_naming_an_unregistered_action_is_refused() -> None:
    with pytest.raises(ValidationFailed, match=r"step 0 \(boo\) is invalid") as caught:
        run_service.validate_plan(build_registry(), [StepSpec("boo", "ghost", {})])
    (error,) = caught.value.errors
    assert error["msg"].startswith("no step action 'ghost' is registered (registered: http")


# -- the engine, given a step nothing registered ---------------------------------------


async def _noop(params: Params, ctx: StepContext) -> StepOutcome:
    return StepOutcome(StepStatus.SUCCESS, "did nothing")


def _with_ghost() -> Registry:
    """The production registry plus an action ``ghost`` (what a newer API process may
    know and this worker not)."""
    registry = Registry()
    for register in REGISTRATIONS:
        register(registry)
    registry[ACTIONS].add("ghost", Action(Params, _noop, idempotent=True))
    return registry.freeze()


async def test_a_step_whose_action_is_not_registered_fails_its_run(context: AppContext) -> None:
    newer = dataclasses.replace(context, registry=_with_ghost())
    steps = [StepSpec("first", "wait", {"seconds": 0}), StepSpec("haunted", "ghost", {})]
    async with newer.unit_of_work() as uow:
        run = await run_service.create_run(
            uow, newer, kind=RunKind.PLAYBOOK, steps=steps, requested_by="tests"
        )
    status = await engine.execute(context, run.id, "registry-test")  # the older worker
    assert status == RunStatus.FAILURE
    async with context.sessionmaker() as session:
        rows = list(
            await session.scalars(select(Step).where(Step.run_id == run.id).order_by(Step.position))
        )
        finished = await run_service.get_run(session, run.id, None)
    assert [r.status for r in rows] == [StepStatus.SUCCESS.value, StepStatus.FAILURE.value]
    assert rows[1].error is not None
    assert "no step action 'ghost' is registered" in rows[1].error
    assert finished.failure_type == "/problems/step-failed"
    assert "ghost" in (finished.failure_detail or "")


# -- drivers ---------------------------------------------------------------------------


class _FakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str


class _FakeDriver:
    name = "fake"
    closed: list[str | None] = []

    def __init__(self, settings: DriverSettings, connection: str | None) -> None:
        self.connection = connection

    async def aclose(self) -> None:
        _FakeDriver.closed.append(self.connection)


def _fake(settings: DriverSettings, connection: str | None) -> Driver:
    return _FakeDriver(settings, connection)  # type: ignore[return-value]


FAKE = DriverType(
    config=_FakeConfig,
    description="Runs nowhere (a test driver).",
    create=_fake,
    connection=lambda config: str(config.get("endpoint")),
)


def _with_fake_driver() -> Registry:
    registry = Registry()
    for register in REGISTRATIONS:
        register(registry)
    registry[DRIVERS].add("fake", FAKE)
    return registry.freeze()


async def test_one_driver_instance_per_connection_closed_with_the_pool(
    tmp_path: Any,
) -> None:
    pool = DriverPool(_with_fake_driver()[DRIVERS], DriverSettings(tmp_path))
    a = pool.get("fake", {"endpoint": "a"})
    assert pool.get("fake", {"endpoint": "a"}) is a
    b = pool.get("fake", {"endpoint": "b"})
    assert b is not a
    assert pool.get("process") is pool.get("process", {"command": ["other"]})
    with pytest.raises(NotRegistered, match="no driver 'nope' is registered"):
        pool.get("nope")
    _FakeDriver.closed.clear()
    await pool.aclose()
    assert sorted(c or "" for c in _FakeDriver.closed) == ["a", "b"]
    assert pool.get("fake", {"endpoint": "a"}) is not a  # a new one after closing


async def test_the_context_keeps_a_driver_pool(context: AppContext) -> None:
    pool = drivers(context)
    assert pool.get("process") is pool.get("process")
    assert pool.types is context.registry[DRIVERS]


async def test_a_registered_driver_is_accepted_and_documented(settings: Settings) -> None:
    registry = _with_fake_driver()
    schemas = service_schemas(registry[DRIVERS])
    assert list(schemas.models) == ["process", "docker", "fake"]
    body = schemas.adapter.validate_python({"driver": "fake", "config": {"endpoint": "x"}})
    assert type(body).__name__ == "FakeService"
    context = build_context(settings, registry=registry)
    try:
        document = create_app(settings, context=context).openapi()
    finally:
        await context.aclose()
    components = document["components"]["schemas"]
    assert components["FakeService"]["description"] == "Runs nowhere (a test driver)."
    assert components["ServiceOut"]["properties"]["driver"]["enum"] == [
        "process",
        "docker",
        "fake",
    ]
    runs = (
        "This installation runs `deployment`, `rollback`, `backup`, `backup_verification`, "
        "`restore`, `health_check`, `maintenance`, `playbook`;"
    )
    assert runs in components["RunKind"]["description"]
    put = document["paths"]["/v1/environments/{name}/services/{service_name}"]["put"]
    body_schema = put["requestBody"]["content"]["application/json"]["schema"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in body_schema["oneOf"]} == {
        "ProcessService",
        "DockerService",
        "FakeService",
    }


def test_the_api_process_does_not_import_the_docker_sdk(tmp_path: Any) -> None:
    """Creating the app, starting it and documenting it loads no docker SDK: configs are
    validated with models of modules without it (app.drivers.docker_config)."""
    script = textwrap.dedent(
        """
        import json, sys
        from fastapi.testclient import TestClient
        from app.core.settings import Settings
        from app.main import create_app

        settings = Settings(state_dir=sys.argv[1], redis_url="redis://127.0.0.1:9/0")
        with TestClient(create_app(settings)) as client:
            assert client.get("/openapi.json").status_code == 200
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "docker"
                                or m == "app.drivers.docker")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
