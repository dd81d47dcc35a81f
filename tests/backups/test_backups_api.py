"""``/v1/backups`` end to end: a real worker backs up a real SQLite database into a
folder, reads it back, drills it into a scratch database; the problems of bad requests;
listing; deleting under the guard; the control plane's own backup."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from sqlalchemy import select

from app.backups.models import Backup
from app.core.context import AppContext
from app.core.db import insert_rows, utcnow
from app.incidents.models import Incident
from app.outbox.models import OutboxEvent
from app.runs.models import Run
from tests.backups.helpers import (
    WAIT,
    audit_actions,
    flip_byte,
    make_sqlite,
    no_backups,
    operator,
    put_environment,
    sqlite_url,
    viewer,
)
from tests.factories import IssuedToken

__all__ = ["no_backups", "operator", "viewer"]  # fixtures

pytestmark = pytest.mark.usefixtures("no_backups")


def object_path(storage_url: str) -> Path:
    parts = urlsplit(storage_url)
    assert parts.scheme == "file"
    return Path(unquote(parts.path))


async def events_of(context: AppContext, type_: str) -> list[dict[str, Any]]:
    async with context.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(OutboxEvent.type == type_).order_by(OutboxEvent.created_at)
        )
        return [row.data for row in rows]


async def staging(
    client: httpx.AsyncClient, admin: IssuedToken, tmp_path: Path, **body: Any
) -> Path:
    path = make_sqlite(tmp_path / "targets" / "shop.db")
    await put_environment(client, admin, "staging", database_url=sqlite_url(path), **body)
    return path


async def take(
    client: httpx.AsyncClient, token: IssuedToken, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(
        "/v1/backups",
        json=body,
        headers={**token.headers, **WAIT, "Idempotency-Key": str(uuid.uuid4())},
        timeout=90,
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.usefixtures("worker")
async def test_a_backup_is_stored_read_back_and_replayed_by_its_key(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    operator: IssuedToken,
    tmp_path: Path,
) -> None:
    await staging(client, admin, tmp_path)
    headers = {**operator.headers, **WAIT, "Idempotency-Key": "backup-once"}
    response = await client.post(
        "/v1/backups", json={"environment": "staging"}, headers=headers, timeout=90
    )
    assert response.status_code == 201, response.text
    backup = response.json()
    assert response.headers["Location"] == f"/v1/backups/{backup['id']}"
    assert backup["status"] == "success", backup
    assert backup["run_id"] == backup["id"]
    assert backup["origin"] == "request"
    assert (backup["environment"], backup["database"], backup["engine"]) == (
        "staging",
        "shop",
        "sqlite",
    )
    assert backup["row_counts"] == {"customers": 7, "orders": 50}
    assert backup["object_key"].startswith("staging/shop/")
    assert backup["object_key"].endswith(f"_{backup['id']}.db.gz")
    stored = object_path(backup["storage_url"])
    assert stored.is_file()
    content = stored.read_bytes()
    assert len(content) == backup["size_bytes"]
    assert hashlib.sha256(content).hexdigest() == backup["sha256"]
    assert not list(stored.parent.glob("*.partial"))
    assert backup["duration_seconds"] is not None

    # The run is of kind backup and succeeded; the event and the audit rows were written.
    run = await client.get(backup["links"]["run"], headers=operator.headers)
    assert (run.json()["kind"], run.json()["status"]) == ("backup", "success")
    assert run.json()["steps"][0]["result"]["sha256"] == backup["sha256"]
    (event,) = await events_of(context, "backup.succeeded")
    assert event["backup_id"] == backup["id"]
    assert await events_of(context, "backup.failed") == []
    assert await audit_actions(context, backup["id"]) == ["backup.create", "backup.succeeded"]

    # The same key: the same backup, nothing new.
    again = await client.post(
        "/v1/backups", json={"environment": "staging"}, headers=headers, timeout=90
    )
    assert again.status_code == 201, again.text
    assert again.json()["id"] == backup["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    listed = await client.get("/v1/backups", headers=operator.headers)
    assert [b["id"] for b in listed.json()["items"]] == [backup["id"]]
    read = await client.get(f"/v1/backups/{backup['id']}", headers=operator.headers)
    assert read.json() == backup


@pytest.mark.one_backend("sqlite")
async def test_a_dry_run_shows_the_plan_and_writes_nothing(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    operator: IssuedToken,
    tmp_path: Path,
) -> None:
    await staging(client, admin, tmp_path)
    response = await client.post(
        "/v1/backups",
        json={"environment": "staging", "dry_run": True},
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["dry_run"] is True
    assert (plan["environment"], plan["database"], plan["engine"], plan["format"]) == (
        "staging",
        "shop",
        "sqlite",
        "sqlite",
    )
    assert plan["object_key"].startswith("staging/shop/")
    assert plan["storage_url"].startswith(context.settings.storage_url_value)
    async with context.sessionmaker() as session:
        assert (await session.scalars(select(Backup))).all() == []
        assert (await session.scalars(select(Run))).all() == []
    assert not object_path(plan["storage_url"]).exists()


async def test_the_problems_of_bad_requests(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    operator: IssuedToken,
    viewer: IssuedToken,
    tmp_path: Path,
) -> None:
    await put_environment(client, admin, "nodb")
    await put_environment(
        client, admin, "secret", database_url="postgresql://app:hunter2secret@127.0.0.1:1/app"
    )

    async def post(body: Any, token: IssuedToken = operator) -> httpx.Response:
        return await client.post(
            "/v1/backups",
            json=body,
            headers={**token.headers, "Idempotency-Key": str(uuid.uuid4())},
        )

    missing = await post({"environment": "ghost"})
    assert missing.status_code == 404, missing.text
    assert missing.json()["type"].endswith("/problems/environment-not-found")
    nothing = await post({"environment": "nodb"})
    assert nothing.status_code == 409, nothing.text
    assert nothing.json()["type"].endswith("/problems/no-database")
    assert "database_url" in nothing.json()["detail"]
    for body in ({}, {"environment": "nodb", "self": True}, {"self": 1}, {"environment": "A B"}):
        invalid = await post(body)
        assert invalid.status_code == 422, (body, invalid.text)
    assert (await post({"environment": "nodb"}, viewer)).status_code == 403
    unknown = await client.get("/v1/backups/nope", headers=viewer.headers)
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith("/problems/backup-not-found")
    verify = await client.post(
        "/v1/backups/nope/verify", headers={**operator.headers, "Idempotency-Key": "v-nope"}
    )
    assert verify.status_code == 404
    assert (await client.delete("/v1/backups/nope", headers=operator.headers)).status_code == 403
    assert (await client.delete("/v1/backups/nope", headers=admin.headers)).status_code == 404
    async with context.sessionmaker() as session:
        assert (await session.scalars(select(Backup))).all() == []

    # database_url: admins read it as written, everyone else without its userinfo.
    as_admin = await client.get("/v1/environments/secret", headers=admin.headers)
    assert as_admin.json()["database_url"] == "postgresql://app:hunter2secret@127.0.0.1:1/app"
    assert as_admin.json()["database"] == "app"
    as_viewer = await client.get("/v1/environments/secret", headers=viewer.headers)
    assert "hunter2secret" not in as_viewer.text
    assert as_viewer.json()["database_url"] == "postgresql://[redacted]@127.0.0.1:1/app"
    bad = await client.put(
        "/v1/environments/bad",
        json={"database_url": "mysql://x/y", "backup_smoke_queries": ["DELETE FROM t"]},
        headers=admin.headers,
    )
    assert bad.status_code == 422, bad.text
    assert {e["loc"][-1] for e in bad.json()["errors"]} >= {"database_url", 0}


async def test_list_filters_and_pages_newest_first(
    client: httpx.AsyncClient, context: AppContext, viewer: IssuedToken
) -> None:
    now = utcnow()

    def row(n: int, **values: Any) -> Backup:
        fields: dict[str, Any] = {
            "id": f"b{n}",
            "run_id": f"b{n}",
            "origin": "request",
            "environment": "staging",
            "database": "shop",
            "engine": "sqlite",
            "format": "sqlite",
            "status": "success",
            "storage_url": f"file:///nowhere/b{n}",
            "object_key": f"staging/shop/b{n}.db.gz",
            "row_counts": {},
            "created_at": now - dt.timedelta(minutes=10 - n),
        }
        return Backup(**{**fields, **values})

    async with context.unit_of_work() as uow:
        await insert_rows(
            uow.session,
            [
                row(1, status="failure"),
                row(2, verified_at=now),
                row(3, environment=None, database="formula-ops"),
                row(4, origin="schedule", status="deleted"),
                row(5, environment="production", status="unverifiable"),
            ],
        )

    async def ids(**query: Any) -> list[str]:
        response = await client.get("/v1/backups", params=query, headers=viewer.headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids() == ["b5", "b4", "b3", "b2", "b1"]
    assert await ids(environment="staging") == ["b4", "b2", "b1"]
    assert await ids(database="formula-ops") == ["b3"]
    assert await ids(status="deleted") == ["b4"]
    assert await ids(origin="schedule") == ["b4"]
    assert await ids(verified="true") == ["b2"]
    assert await ids(verified="false") == ["b5", "b4", "b3", "b1"]
    assert await ids(self="true") == ["b3"]
    assert await ids(self="false", status="success") == ["b2"]
    first = await client.get("/v1/backups", params={"limit": 2}, headers=viewer.headers)
    assert [i["id"] for i in first.json()["items"]] == ["b5", "b4"]
    cursor = first.json()["next_cursor"]
    assert await ids(limit=2, cursor=cursor) == ["b3", "b2"]
    assert (
        await client.get("/v1/backups", params={"status": "lost"}, headers=viewer.headers)
    ).status_code == 422


@pytest.mark.usefixtures("worker")
@pytest.mark.one_backend("sqlite")
async def test_a_drill_verifies_a_backup_and_a_changed_byte_makes_it_unverifiable(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    operator: IssuedToken,
    tmp_path: Path,
) -> None:
    await staging(
        client,
        admin,
        tmp_path,
        backup_smoke_queries=["SELECT count(*) FROM orders", "select * from customers"],
    )
    backup = await take(client, operator, {"environment": "staging"})
    verify = await client.post(
        f"/v1/backups/{backup['id']}/verify",
        headers={**operator.headers, **WAIT, "Idempotency-Key": str(uuid.uuid4())},
        timeout=90,
    )
    assert verify.status_code == 201, verify.text
    run = verify.json()
    assert (run["kind"], run["status"]) == ("backup_verification", "success"), run
    assert [s["action"] for s in run["steps"]] == ["backup_checksum", "backup_drill"]
    verified = (await client.get(f"/v1/backups/{backup['id']}", headers=operator.headers)).json()
    assert verified["status"] == "success"
    assert verified["verified_at"] is not None
    assert verified["restore_seconds"] is not None
    assert verified["restore_seconds"] > 0
    assert verified["verification_run_id"] == run["id"]
    assert verified["verification"]["passed"] is True
    assert verified["verification"]["row_counts"] == {"customers": 7, "orders": 50}
    assert [s["ok"] for s in verified["verification"]["smoke"]] == [True, True]
    (event,) = await events_of(context, "backup.verified")
    assert event["backup_id"] == backup["id"]
    assert event["restore_seconds"] is not None
    assert "backup.verified" in await audit_actions(context, backup["id"])
    # No scratch database is left beside the target.
    assert sorted(p.name for p in (tmp_path / "targets").iterdir()) == ["shop.db"]

    # One byte of the stored object changes: the next drill fails, the backup is
    # unverifiable, the event says so and an incident opens.
    stored = object_path(backup["storage_url"])
    flip_byte(stored, backup["size_bytes"] // 2)
    again = await client.post(
        f"/v1/backups/{backup['id']}/verify",
        headers={**operator.headers, **WAIT, "Idempotency-Key": str(uuid.uuid4())},
        timeout=90,
    )
    assert again.status_code == 201, again.text
    assert again.json()["status"] == "failure"
    checksum = again.json()["steps"][0]
    assert checksum["status"] == "failure"
    assert "changed" in checksum["error"]
    failed = (await client.get(f"/v1/backups/{backup['id']}", headers=operator.headers)).json()
    assert failed["status"] == "unverifiable"
    assert failed["verification"]["passed"] is False
    assert failed["verification_run_id"] == again.json()["id"]
    (event,) = await events_of(context, "backup.verification_failed")
    assert event["status"] == "unverifiable"
    assert "changed" in event["error"]
    async with context.sessionmaker() as session:
        incidents = list(await session.scalars(select(Incident)))
    assert len(incidents) == 1
    assert (incidents[0].source, incidents[0].severity) == ("backup", "P2")


@pytest.mark.usefixtures("worker")
@pytest.mark.one_backend("sqlite")
async def test_delete_keeps_the_newest_verified_backup_and_refuses_one_in_progress(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    operator: IssuedToken,
    tmp_path: Path,
) -> None:
    await staging(client, admin, tmp_path)
    older = await take(client, operator, {"environment": "staging"})
    newer = await take(client, operator, {"environment": "staging"})
    verify = await client.post(
        f"/v1/backups/{older['id']}/verify",
        headers={**operator.headers, **WAIT, "Idempotency-Key": str(uuid.uuid4())},
        timeout=90,
    )
    assert verify.json()["status"] == "success", verify.text

    kept = await client.delete(f"/v1/backups/{older['id']}", headers=admin.headers)
    assert kept.status_code == 409, kept.text
    assert kept.json()["type"].endswith("/problems/newest-verified-backup")
    assert object_path(older["storage_url"]).is_file()

    deleted = await client.delete(f"/v1/backups/{newer['id']}", headers=admin.headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["status"] == "deleted"
    assert deleted.json()["deleted_by"] is not None
    assert not object_path(newer["storage_url"]).exists()
    assert (await client.delete(f"/v1/backups/{newer['id']}", headers=admin.headers)).json()[
        "status"
    ] == "deleted"
    listed = await client.get("/v1/backups", params={"status": "deleted"}, headers=admin.headers)
    assert [b["id"] for b in listed.json()["items"]] == [newer["id"]]
    (event,) = await events_of(context, "backup.deleted")
    assert event["backup_id"] == newer["id"]
    assert (await audit_actions(context, newer["id"]))[-1] == "backup.delete"
    refused = await client.post(
        f"/v1/backups/{newer['id']}/verify",
        headers={**operator.headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/problems/backup-not-verifiable")

    async with context.unit_of_work() as uow:
        row = await uow.session.get(Backup, older["id"])
        assert row is not None
        busy = Backup(
            id="busy",
            run_id="busy",
            environment="staging",
            database="shop",
            engine="sqlite",
            format="sqlite",
            status="in_progress",
            storage_url="file:///nowhere/busy",
            object_key="staging/shop/busy.db.gz",
            row_counts={},
            created_at=utcnow(),
        )
        await insert_rows(uow.session, [busy])
    in_progress = await client.delete("/v1/backups/busy", headers=admin.headers)
    assert in_progress.status_code == 409
    assert in_progress.json()["type"].endswith("/problems/backup-in-progress")


@pytest.mark.usefixtures("worker")
async def test_the_control_plane_backs_itself_up(
    client: httpx.AsyncClient, context: AppContext, operator: IssuedToken, backend: str
) -> None:
    backup = await take(client, operator, {"self": True})
    assert backup["status"] == "success", backup
    assert backup["environment"] is None
    # The SQLite file's name, or the PostgreSQL database's (its tables schema-qualified).
    name = (
        "formula-ops" if backend == "sqlite" else context.settings.self_database_url.rsplit("/")[-1]
    )
    assert backup["database"] == name
    assert backup["engine"] == ("sqlite" if backend == "sqlite" else "postgresql")
    assert backup["object_key"].startswith(f"_self/{name}/")
    # Exact counts of the largest tables (10 at most): which ones tie for the last
    # places among equally small tables varies, so `backup` itself may not be listed.
    counts = backup["row_counts"]
    assert 1 <= len(counts) <= 10, counts
    assert all(isinstance(n, int) and n >= 0 for n in counts.values()), counts
    assert sum(counts.values()) >= 1, counts  # at least the audit trail and tokens
    table = "backup" if backend == "sqlite" else "public.backup"
    assert counts.get(table, 1) >= 1, counts  # its own row, in progress, when listed
    assert object_path(backup["storage_url"]).stat().st_size == backup["size_bytes"]
    listed = await client.get("/v1/backups", params={"self": "true"}, headers=operator.headers)
    assert [b["id"] for b in listed.json()["items"]] == [backup["id"]]
