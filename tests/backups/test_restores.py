"""Restores on the real parts: an environment whose database is a SQLite file in the
test's folder, backups taken by the real backup service into the file storage of the
test's state folder, a real worker executing the restore run, the sample web service run
by the real ``process`` driver, and the command line against a live server. Each runs on
both control-plane databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from app.auth.principal import Principal
from app.auth.roles import Role
from app.backups import operations as backup_operations
from app.backups import restores
from app.backups.models import Backup, BackupOrigin, BackupStatus, Restore
from app.backups.restore_schemas import RestoreCreate
from app.core.context import AppContext
from app.core.ids import new_id
from app.drivers.base import ServiceSpec
from app.drivers.pool import drivers
from app.environments.models import Environment, Service
from app.main import create_app
from app.outbox.catalog import EVENT_TYPES
from app.outbox.models import OutboxEvent
from app.runs import engine
from app.runs import service as run_service
from app.runs.models import RunStatus, Step
from tests.factories import IssuedToken, issue_token, sample_service
from tests.helpers import (
    audit_events_after,
    free_port,
    last_audit_seq,
    live,
    stop_services,
)

WAIT = {"Prefer": "wait=120"}
ROWS = 40
FORMULA_OPS = Path(sys.executable).with_name("formula-ops")


@pytest.fixture(autouse=True)
async def _no_backups(context: AppContext) -> None:
    """Backups and restores of earlier tests are gone (the shared fixture does not know
    these tables yet)."""
    async with context.unit_of_work() as uow:
        await uow.session.execute(delete(Restore))
        await uow.session.execute(delete(Backup))


@dataclass
class Target:
    environment: str
    database: str
    path: Path

    def count(self) -> int:
        with sqlite3.connect(self.path) as conn:
            value: int = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        conn.close()
        return value

    def write(self, sql: str) -> None:
        conn = sqlite3.connect(self.path)
        with conn:
            conn.execute(sql)
        conn.close()

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


async def quiet(line: str) -> None:
    pass


@pytest.fixture
async def target(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, tmp_path: Path
) -> Target:
    """Environment ``prod`` whose database is ``shop.db`` (``orders``: 40 rows)."""
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
        conn.executemany(
            "INSERT INTO orders (item) VALUES (?)", [(f"item {n}",) for n in range(ROWS)]
        )
    conn.close()
    response = await client.put(
        "/v1/environments/prod", json={"database": "shop"}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    async with context.unit_of_work() as uow:
        await uow.session.execute(
            update(Environment)
            .where(Environment.name == "prod")
            .values(
                database_url=f"sqlite:///{path}",
                backup_smoke_queries=["SELECT id, item FROM orders LIMIT 5"],
            )
        )
    return Target("prod", "shop", path)


async def take_backup(context: AppContext, environment: str) -> Backup:
    """A backup run created as the API creates one, executed here by the run engine (a
    worker that picks its job up too finds it taken)."""
    async with context.unit_of_work() as uow:
        run, prepared = await backup_operations.create_backup(
            uow, context, Principal.system("tests", Role.OPERATOR), environment
        )
        backup_id = prepared.id
    await engine.execute(context, run.id, "tests")
    ended = await run_service.wait_terminal(context, run.id, None, 60)
    assert ended.status == "success", (ended.status, ended.failure_detail)
    async with context.unit_of_work() as uow:
        done = await uow.session.get(Backup, backup_id)
    assert done is not None
    assert done.status == BackupStatus.SUCCESS, done.error
    return done


def stored_path(backup: Backup) -> Path:
    return Path(unquote(urlsplit(backup.storage_url).path))


async def set_backup(context: AppContext, backup_id: str, **values: Any) -> None:
    async with context.unit_of_work() as uow:
        await uow.session.execute(update(Backup).where(Backup.id == backup_id).values(**values))


async def restore_row(context: AppContext, restore_id: str) -> Restore:
    async with context.sessionmaker() as session:
        row = await session.get(Restore, restore_id)
    assert row is not None
    return row


async def backups_of(context: AppContext, run_id: str) -> list[Backup]:
    async with context.sessionmaker() as session:
        return list(await session.scalars(select(Backup).where(Backup.run_id == run_id)))


async def outbox(context: AppContext, prefix: str) -> list[OutboxEvent]:
    async with context.sessionmaker() as session:
        rows = await session.scalars(select(OutboxEvent).where(OutboxEvent.type.startswith(prefix)))
        return sorted(rows, key=lambda e: (e.created_at, e.id))


def assert_valid_events(context: AppContext, events: list[OutboxEvent]) -> None:
    for event in events:
        context.registry[EVENT_TYPES].get(event.type).data.model_validate(event.data)


def steps_by_action(body: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(s["phase"], s["action"]): s for s in body["steps"]}


async def post_restore(
    client: httpx.AsyncClient,
    token: IssuedToken,
    body: dict[str, Any],
    *,
    wait: bool = False,
) -> httpx.Response:
    headers = {**token.headers, "Idempotency-Key": new_id(), **(WAIT if wait else {})}
    return await client.post("/v1/restores", json=body, headers=headers)


# -- end to end ----------------------------------------------------------------------------


@pytest.mark.one_backend("sqlite")
async def test_a_restore_brings_the_data_back_after_a_safety_backup(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    target: Target,
    worker: None,
) -> None:
    backup = await take_backup(context, target.environment)
    target.write("DELETE FROM orders WHERE id > 10")
    target.write("INSERT INTO orders (item) VALUES ('written after the backup')")
    assert target.count() == 11
    before = await last_audit_seq(context)

    queued = await post_restore(client, admin, {"backup_id": backup.id, "confirm": "shop"})
    assert queued.status_code == 202, queued.text
    restore_id = queued.json()["id"]
    assert queued.headers["Location"] == f"/v1/restores/{restore_id}"
    assert queued.json()["target"] == "prod/shop"
    assert queued.json()["active"] is True
    assert queued.json()["backup"]["id"] == backup.id
    assert queued.json()["backup"]["sha256"] == backup.sha256

    finished = await client.get(f"/v1/restores/{restore_id}", headers=admin.headers)
    for _ in range(600):
        if not finished.json()["active"]:
            break
        await asyncio.sleep(0.2)
        finished = await client.get(f"/v1/restores/{restore_id}", headers=admin.headers)
    body = finished.json()
    assert body["status"] == "success", body
    assert body["failure"] is None
    assert body["restore_seconds"] is not None
    assert body["restore_seconds"] >= 0
    assert target.count() == ROWS  # the data is back
    with sqlite3.connect(target.path) as conn:
        assert conn.execute("SELECT item FROM orders WHERE id = 40").fetchone() == ("item 39",)
    conn.close()

    steps = steps_by_action(body)
    for action in (
        "restore_check",
        "restore_safety_backup",
        "restore_stop_services",
        "restore_database",
        "restore_verify_health",
    ):
        assert steps[("main", action)]["status"] == "success", steps[("main", action)]
    assert steps[("main", "restore_start_services")]["status"] == "skipped"  # none stopped
    assert steps[("rollback", "restore_start_services")]["status"] == "skipped"

    # The safety backup holds the database as it was before: 11 rows.
    (safety,) = await backups_of(context, restore_id)
    assert body["pre_restore_backup_id"] == safety.id
    assert safety.origin == BackupOrigin.RESTORE
    assert safety.status == BackupStatus.SUCCESS
    assert safety.row_counts == {"orders": 11}

    row = await restore_row(context, restore_id)
    assert (row.active, row.status, row.finished_at is not None) == (False, "success", True)

    events = await outbox(context, "restore.")
    assert [e.type for e in events] == ["restore.started", "restore.succeeded"]
    assert_valid_events(context, events)
    assert events[1].data["pre_restore_backup_id"] == safety.id

    audit = await audit_events_after(context, before)
    created = [e for e in audit if e.action == "restore.create"]
    assert len(created) == 1
    assert created[0].summary["backup_id"] == backup.id
    assert created[0].summary["target"] == "prod/shop"
    assert created[0].summary["forced"] is False
    stepped = [e.summary for e in audit if e.action == "restore.step"]
    assert [s["step"] for s in stepped] == [
        "restore_check",
        "restore_safety_backup",
        "restore_stop_services",
        "restore_database",
        "restore_start_services",
        "restore_verify_health",
    ]  # the rollback-phase start is skipped without running after a success
    assert {s["outcome"] for s in stepped} <= {"success", "skipped"}
    assert [e.action for e in audit if e.action == "restore.succeeded"] == ["restore.succeeded"]
    assert str(target.path) not in str([e.summary for e in audit])

    listed = await client.get("/v1/restores?environment=prod&status=success", headers=admin.headers)
    assert [r["id"] for r in listed.json()["items"]] == [restore_id]
    assert (await client.get("/v1/restores?status=failure", headers=admin.headers)).json()[
        "items"
    ] == []


@pytest.fixture
async def web(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, target: Target
) -> AsyncIterator[ServiceSpec]:
    """``prod/web``: the sample web service, running version 1.0.0 through the real
    ``process`` driver."""
    port = free_port()
    response = await client.put(
        "/v1/environments/prod/services/web", json=sample_service(port), headers=admin.headers
    )
    assert response.status_code == 201, response.text
    async with context.sessionmaker() as session:
        row = await session.scalar(select(Service).where(Service.name == "web"))
    assert row is not None
    spec = ServiceSpec("prod", "web", row.driver, row.config, row.health_url, 10)
    await drivers(context).get(spec.driver, spec.config).deploy(spec, "1.0.0", quiet)
    async with context.unit_of_work() as uow:
        await uow.session.execute(
            update(Service).where(Service.name == "web").values(current_version="1.0.0")
        )
    yield spec
    await stop_services(context)


async def _pid(context: AppContext, spec: ServiceSpec) -> str | None:
    running = await drivers(context).get(spec.driver, spec.config).current(spec)
    return running.ident if running is not None else None


@pytest.mark.one_backend("sqlite")
async def test_the_services_are_stopped_for_the_restore_and_started_again(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    target: Target,
    web: ServiceSpec,
    worker: None,
) -> None:
    backup = await take_backup(context, target.environment)
    target.write("DELETE FROM orders")
    pid = await _pid(context, web)
    assert pid is not None

    done = await post_restore(client, admin, {"backup_id": backup.id, "confirm": "shop"}, wait=True)
    assert done.status_code == 201, done.text
    body = done.json()
    assert body["status"] == "success", body
    steps = steps_by_action(body)
    stopped = steps[("main", "restore_stop_services")]["result"]["stopped"]
    assert stopped == [{"name": "web", "version": "1.0.0"}]
    assert steps[("main", "restore_start_services")]["result"]["started"] == ["web"]
    assert steps[("main", "restore_verify_health")]["result"]["healthy"] == {"web": True}
    assert target.count() == ROWS
    new_pid = await _pid(context, web)
    assert new_pid is not None
    assert new_pid != pid
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(web.health_url or "", timeout=5)).status_code == 200


@pytest.mark.one_backend("sqlite")
async def test_a_failed_restore_starts_the_services_again_and_leaves_the_target(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    target: Target,
    web: ServiceSpec,
    worker: None,
) -> None:
    """The restored copy does not match the row counts recorded at backup time: the
    target is not replaced, and the services stopped for it run again."""
    backup = await take_backup(context, target.environment)
    await set_backup(context, backup.id, row_counts={"orders": ROWS + 1})
    target.write("DELETE FROM orders WHERE id > 5")
    untouched = target.digest()

    done = await post_restore(client, admin, {"backup_id": backup.id, "confirm": "shop"}, wait=True)
    assert done.status_code == 201, done.text
    body = done.json()
    assert body["status"] == "failure", body
    assert body["failure"]["type"] == "/problems/restore-failed"
    assert "orders" in body["failure"]["detail"]
    assert target.digest() == untouched
    assert target.count() == 5
    steps = steps_by_action(body)
    assert steps[("main", "restore_database")]["status"] == "failure"
    assert steps[("main", "restore_start_services")]["status"] == "skipped"
    restarted = steps[("rollback", "restore_start_services")]
    assert restarted["status"] == "success", restarted
    assert restarted["result"]["started"] == ["web"]
    assert await _pid(context, web) is not None
    row = await restore_row(context, body["id"])
    assert (row.active, row.status) == (False, "failure")
    events = await outbox(context, "restore.")
    assert [e.type for e in events] == ["restore.started", "restore.failed"]
    assert_valid_events(context, events)


async def test_a_worker_dying_during_the_restore_still_starts_the_services_again(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    target: Target,
    web: ServiceSpec,
) -> None:
    """The worker died while the database was being restored (a step not safe to run
    twice): the resumed run does not restore again, and starts what was stopped."""
    backup = await take_backup(context, target.environment)
    queued = await post_restore(client, admin, {"backup_id": backup.id, "confirm": "shop"})
    assert queued.status_code == 202
    run_id = queued.json()["id"]
    # What the dead worker left: three steps done, the services stopped, the restore
    # step running.
    await drivers(context).get(web.driver, web.config).stop(web, quiet)
    stopped = {"stopped": [{"name": "web", "version": "1.0.0"}], "not_running": []}
    async with context.unit_of_work() as uow:
        for position, values in (
            (0, {"status": "success", "attempts": 1}),
            (1, {"status": "success", "attempts": 1}),
            (2, {"status": "success", "attempts": 1, "result": stopped}),
            (3, {"status": "in_progress", "attempts": 1}),
        ):
            await uow.session.execute(
                update(Step)
                .where(Step.run_id == run_id, Step.position == position)
                .values(**values)
            )
    target.write("DELETE FROM orders WHERE id > 3")
    untouched = target.digest()

    assert await engine.execute(context, run_id, "tests") == RunStatus.FAILURE
    body = (await client.get(f"/v1/restores/{run_id}", headers=admin.headers)).json()
    assert body["failure"]["type"] == "/problems/interrupted"
    assert body["active"] is False
    steps = steps_by_action(body)
    assert steps[("main", "restore_database")]["status"] == "failure"
    assert steps[("main", "restore_database")]["attempts"] == 1  # not run again
    assert steps[("rollback", "restore_start_services")]["status"] == "success"
    assert steps[("rollback", "restore_start_services")]["result"]["started"] == ["web"]
    assert await _pid(context, web) is not None
    assert target.digest() == untouched


@pytest.mark.one_backend("sqlite")
async def test_a_changed_byte_in_the_stored_backup_stops_the_restore_first(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    target: Target,
    worker: None,
) -> None:
    backup = await take_backup(context, target.environment)
    stored = stored_path(backup)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    target.write("DELETE FROM orders WHERE id > 20")
    untouched = target.digest()
    before = await last_audit_seq(context)

    done = await post_restore(client, admin, {"backup_id": backup.id, "confirm": "shop"}, wait=True)
    body = done.json()
    assert body["status"] == "failure", body
    assert body["failure"]["type"] == "/problems/backup-changed"
    assert "changed" in body["failure"]["detail"]
    assert target.digest() == untouched
    assert body["pre_restore_backup_id"] is None
    assert await backups_of(context, body["id"]) == []  # no safety backup was taken
    statuses = {k: s["status"] for k, s in steps_by_action(body).items()}
    assert statuses[("main", "restore_check")] == "failure"
    for action in ("restore_safety_backup", "restore_stop_services", "restore_database"):
        assert statuses[("main", action)] == "skipped"
    audit = await audit_events_after(context, before, action="restore.step")
    assert audit[0].summary["step"] == "restore_check"
    assert audit[0].summary["outcome"] == "failure"
    assert audit[0].outcome == "failed"


@pytest.mark.one_backend("sqlite")
async def test_a_failed_safety_backup_stops_the_restore(
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    target: Target,
    worker: None,
) -> None:
    """The target cannot be backed up (its file is no database any more): nothing is
    restored over it."""
    backup = await take_backup(context, target.environment)
    target.path.write_bytes(b"not a database " * 100)
    untouched = target.digest()

    done = await post_restore(client, admin, {"backup_id": backup.id, "confirm": "shop"}, wait=True)
    body = done.json()
    assert body["status"] == "failure", body
    assert body["failure"]["type"] == "/problems/safety-backup-failed"
    assert target.digest() == untouched
    (safety,) = await backups_of(context, body["id"])
    assert safety.status == BackupStatus.FAILURE
    assert body["pre_restore_backup_id"] == safety.id
    statuses = {k: s["status"] for k, s in steps_by_action(body).items()}
    assert statuses[("main", "restore_stop_services")] == "skipped"
    assert statuses[("main", "restore_database")] == "skipped"


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.one_backend("sqlite")
async def test_confirm_must_name_the_database(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, target: Target
) -> None:
    backup = await take_backup(context, target.environment)
    for confirm in ("shop2", "SHOP", "", "prod/shop"):
        response = await post_restore(client, admin, {"backup_id": backup.id, "confirm": confirm})
        assert response.status_code == 422, response.text
        problem = response.json()
        assert [e["loc"] for e in problem["errors"]] == [["body", "confirm"]]
        assert str(target.path) not in response.text
    missing = await post_restore(client, admin, {"backup_id": backup.id})
    assert missing.status_code == 422
    unknown = await post_restore(client, admin, {"backup_id": new_id(), "confirm": "shop"})
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "/problems/backup-not-found"
    async with context.sessionmaker() as session:
        assert list(await session.scalars(select(Restore))) == []


@pytest.mark.one_backend("sqlite")
async def test_only_admins_restore(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, target: Target
) -> None:
    backup = await take_backup(context, target.environment)
    body = {"backup_id": backup.id, "confirm": "shop"}
    for role in (Role.VIEWER, Role.DEPLOYER, Role.OPERATOR):
        token = await issue_token(context, role)
        response = await post_restore(client, token, body)
        assert response.status_code == 403, (role, response.text)
        assert (await client.get("/v1/restores", headers=token.headers)).status_code == 200
    async with context.sessionmaker() as session:
        assert list(await session.scalars(select(Restore))) == []
    dry = await client.post("/v1/restores", json={**body, "dry_run": True}, headers=admin.headers)
    assert dry.status_code == 200, dry.text
    assert [s["action"] for s in dry.json()["steps"]] == [
        "restore_check",
        "restore_safety_backup",
        "restore_stop_services",
        "restore_database",
        "restore_start_services",
        "restore_verify_health",
        "restore_start_services",
    ]
    async with context.sessionmaker() as session:
        assert list(await session.scalars(select(Restore))) == []


@pytest.mark.one_backend("sqlite")
async def test_an_unverifiable_backup_needs_force_and_a_reason(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, target: Target
) -> None:
    backup = await take_backup(context, target.environment)
    await set_backup(context, backup.id, status=BackupStatus.UNVERIFIABLE.value)
    body = {"backup_id": backup.id, "confirm": "shop"}
    before_refusal = await last_audit_seq(context)
    refused = await post_restore(client, admin, body)
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "/problems/backup-unverifiable"
    (refusal,) = await audit_events_after(context, before_refusal, action="restore.create")
    assert refusal.outcome == "failed"
    no_reason = await post_restore(client, admin, {**body, "force": True})
    assert no_reason.status_code == 422
    assert [e["loc"] for e in no_reason.json()["errors"]] == [["body", "reason"]]
    blank = await post_restore(client, admin, {**body, "force": True, "reason": "  "})
    assert blank.status_code == 422
    not_strict = await post_restore(client, admin, {**body, "force": "true", "reason": "x"})
    assert not_strict.status_code == 422

    before = await last_audit_seq(context)
    forced = await post_restore(
        client, admin, {**body, "force": True, "reason": "the only backup before the outage"}
    )
    assert forced.status_code == 202, forced.text
    assert forced.json()["forced"] is True
    assert forced.json()["reason"] == "the only backup before the outage"
    (created,) = await audit_events_after(context, before, action="restore.create")
    assert created.summary["forced"] is True
    assert created.summary["reason"] == "the only backup before the outage"
    assert created.summary["backup_status"] == "unverifiable"


@pytest.mark.one_backend("sqlite")
async def test_only_a_good_backup_of_an_environment_is_restored(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, target: Target
) -> None:
    backup = await take_backup(context, target.environment)
    body = {"backup_id": backup.id, "confirm": "shop"}
    for status in ("failure", "in_progress", "deleted"):
        await set_backup(context, backup.id, status=status)
        response = await post_restore(client, admin, body)
        assert response.status_code == 409, (status, response.text)
        assert response.json()["type"] == "/problems/backup-not-restorable"
        assert status in response.json()["detail"]

    own = Backup(
        run_id=new_id(),
        origin="request",
        environment=None,
        database="formula-ops",
        engine="sqlite",
        format="sqlite",
        status="success",
        storage_url="file:///nowhere/_self/formula-ops/x.db.gz",
        object_key="_self/formula-ops/x.db.gz",
        size_bytes=10,
        sha256="0" * 64,
        row_counts={},
    )
    async with context.unit_of_work() as uow:
        uow.session.add(own)
    refused = await post_restore(client, admin, {"backup_id": own.id, "confirm": "formula-ops"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "/problems/control-plane-restore"
    assert "offline" in refused.json()["detail"]
    assert "audit trail" in refused.json()["detail"]


# -- one restore per database -----------------------------------------------------------


async def test_concurrent_restores_of_one_database_one_is_accepted(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, target: Target
) -> None:
    """Two API processes (apps) on one database, asked at the same moment."""
    backup = await take_backup(context, target.environment)
    body = {"backup_id": backup.id, "confirm": "shop"}
    other = create_app(context.settings, context=context)
    transport = httpx.ASGITransport(app=other, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as replica:
        answers = await asyncio.gather(
            post_restore(client, admin, body), post_restore(replica, admin, body)
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["type"] == "/problems/restore-in-progress"
    async with context.sessionmaker() as session:
        rows = list(await session.scalars(select(Restore)))
    assert len(rows) == 1
    assert rows[0].active


@pytest.mark.one_backend("sqlite")
async def test_a_cancelled_queued_restore_releases_its_database(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, target: Target
) -> None:
    backup = await take_backup(context, target.environment)
    body = {"backup_id": backup.id, "confirm": "shop"}
    key = {"Idempotency-Key": new_id()}
    first = await client.post("/v1/restores", json=body, headers={**admin.headers, **key})
    assert first.status_code == 202, first.text
    replay = await client.post("/v1/restores", json=body, headers={**admin.headers, **key})
    assert replay.json()["id"] == first.json()["id"]  # the same request, answered again
    busy = await post_restore(client, admin, body)
    assert busy.status_code == 409
    assert busy.json()["restore_id"] == first.json()["id"]

    cancelled = await client.post(f"/v1/runs/{first.json()['id']}/cancel", headers=admin.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    shown = (await client.get(f"/v1/restores/{first.json()['id']}", headers=admin.headers)).json()
    assert shown["status"] == "cancelled"
    assert shown["active"] is False
    events = await outbox(context, "restore.")
    assert [e.type for e in events] == ["restore.started", "restore.cancelled"]
    assert_valid_events(context, events)

    second = await post_restore(client, admin, body)
    assert second.status_code == 202, second.text
    assert target.count() == ROWS  # nothing ran


@pytest.mark.one_backend("sqlite")
async def test_a_token_of_another_environment_sees_no_restore(
    context: AppContext, client: httpx.AsyncClient, admin: IssuedToken, target: Target
) -> None:
    backup = await take_backup(context, target.environment)
    created = await post_restore(client, admin, {"backup_id": backup.id, "confirm": "shop"})
    assert created.status_code == 202
    response = await client.put(
        "/v1/environments/staging", json={"description": "x"}, headers=admin.headers
    )
    assert response.status_code == 201
    other = await issue_token(context, Role.VIEWER, environment="staging")
    mine = await issue_token(context, Role.VIEWER, environment="prod")
    path = f"/v1/restores/{created.json()['id']}"
    assert (await client.get(path, headers=other.headers)).status_code == 404
    assert (await client.get("/v1/restores", headers=other.headers)).json()["items"] == []
    assert (await client.get(path, headers=mine.headers)).status_code == 200
    listed = (await client.get("/v1/restores", headers=mine.headers)).json()["items"]
    assert [r["id"] for r in listed] == [created.json()["id"]]


async def test_the_database_refuses_a_second_active_restore_of_a_target(
    context: AppContext, admin: IssuedToken, target: Target
) -> None:
    """The race past the quick check: the first transaction has inserted its row but
    not committed when the second inserts its own; the unique index decides."""
    backup = await take_backup(context, target.environment)
    body = RestoreCreate(backup_id=backup.id, confirm="shop")
    principal = await _principal(context, admin)
    first = context.unit_of_work()
    await first.__aenter__()
    try:
        created = await restores.create(first, context, principal, body)

        async def second() -> None:
            async with context.unit_of_work() as uow:
                await restores.create(uow, context, principal, body)

        racing = asyncio.create_task(second())
        await asyncio.sleep(0.5)
        assert not racing.done()  # waits for the first (the index or the write lock)
    except BaseException:
        await first.__aexit__(*sys.exc_info())
        raise
    await first.__aexit__(None, None, None)
    with pytest.raises(restores.RestoreInProgress):
        await racing
    async with context.sessionmaker() as session:
        rows = list(await session.scalars(select(Restore)))
    assert [r.id for r in rows] == [created.restore.id]

    # The index itself: a second active row of the target is refused, an ended one not.
    def row(active: bool) -> Restore:
        return Restore(
            id=new_id(),
            backup_id=backup.id,
            environment="prod",
            database="shop",
            target="prod/shop",
            active=active,
            status="queued",
            requested_by="tests",
        )

    with pytest.raises(IntegrityError):
        async with context.unit_of_work() as uow:
            uow.session.add(row(True))
    async with context.unit_of_work() as uow:
        uow.session.add(row(False))


async def _principal(context: AppContext, token: IssuedToken) -> Any:
    from app.auth.principal import Principal

    return Principal(token_id=token.id, name="admin for tests", role=Role.ADMIN)


# -- the command line ----------------------------------------------------------------------


def _cli(
    base_url: str, token: IssuedToken, *args: str, stdin: Any = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")},
        "FORMULA_OPS_URL": base_url,
        "FORMULA_OPS_TOKEN": token.value,
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [str(FORMULA_OPS), *args],
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.one_backend("sqlite")
async def test_the_command_line_asks_for_the_database_and_refuses_a_mismatch(
    context: AppContext, app: Any, admin: IssuedToken, target: Target
) -> None:
    backup = await take_backup(context, target.environment)
    async with live(app, context) as base_url:
        piped = await asyncio.to_thread(
            lambda: subprocess.run(
                [str(FORMULA_OPS), "restore", backup.id],
                env={**os.environ, "FORMULA_OPS_URL": base_url, "FORMULA_OPS_TOKEN": admin.value},
                input="shop\n",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        )
        assert piped.returncode == 2, piped
        assert "--confirm" in piped.stderr
        assert "Traceback" not in piped.stderr

        wrong = await asyncio.to_thread(
            _cli, base_url, admin, "restore", backup.id, "--confirm", "x"
        )
        assert wrong.returncode == 1, wrong
        assert "Not restored" in wrong.stderr
        assert "confirm" in wrong.stderr

        # On a terminal, the question goes to stderr and the answer is checked.
        leader, follower = os.openpty()
        try:
            os.write(leader, b"shop_typo\n")
            asked = await asyncio.to_thread(
                _cli, base_url, admin, "restore", backup.id, stdin=follower
            )
        finally:
            os.close(leader)
            os.close(follower)
        assert asked.returncode == 1, asked
        assert "Type the database's name" in asked.stderr
        assert "Not restored" in asked.stderr
        assert "confirm" in asked.stderr

        forced = await asyncio.to_thread(
            _cli, base_url, admin, "restore", backup.id, "--confirm", "shop", "--force"
        )
        assert forced.returncode == 2
        assert "--reason" in forced.stderr

        dry = await asyncio.to_thread(
            _cli, base_url, admin, "restore", backup.id, "--confirm", "shop", "--dry-run"
        )
        assert dry.returncode == 0, dry
        assert "restore_database" in dry.stdout
    async with context.sessionmaker() as session:
        assert list(await session.scalars(select(Restore))) == []


@pytest.mark.one_backend("sqlite")
async def test_the_command_line_restores_and_waits(
    context: AppContext, app: Any, admin: IssuedToken, target: Target, worker: None
) -> None:
    backup = await take_backup(context, target.environment)
    target.write("DELETE FROM orders")
    async with live(app, context) as base_url:
        done = await asyncio.to_thread(
            _cli, base_url, admin, "restore", backup.id, "--confirm", "shop", "--wait"
        )
        assert done.returncode == 0, done
        assert "prod/shop" in done.stdout
        assert "success" in done.stdout
        listed = await asyncio.to_thread(_cli, base_url, admin, "restores", "list")
        assert listed.returncode == 0, listed
        assert "prod/shop" in listed.stdout
        assert "success" in listed.stdout
        again = await asyncio.to_thread(
            _cli, base_url, admin, "restore", backup.id, "--confirm", "shop", "--wait"
        )
        assert again.returncode == 0, again
        assert target.count() == ROWS

        stored = stored_path(backup)
        changed = bytearray(stored.read_bytes())
        changed[-8] ^= 0xFF  # in the gzip trailer's CRC
        stored.write_bytes(bytes(changed))
        failed = await asyncio.to_thread(
            _cli, base_url, admin, "restore", backup.id, "--confirm", "shop", "--wait"
        )
        assert failed.returncode == 1, failed
        assert "failure" in failed.stdout
