"""Hostile probes of ``/v1/backups`` and ``/v1/restores``: roles and environment-scoped
tokens, secrets of ``database_url`` shown to non-admins, odd bodies, query parameters
and path ids (each a 4xx problem, never a 500), and requests on backups in every
status."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select

from app.auth.roles import Role
from app.backups import retention
from app.backups.models import Backup, BackupStatus
from app.core.context import AppContext
from app.core.db import utcnow
from app.core.ids import new_id
from app.outbox.models import OutboxEvent
from tests.backups.helpers import make_sqlite, no_backups, put_environment, sqlite_url, viewer
from tests.factories import IssuedToken, issue_token
from tests.helpers import live

__all__ = ["no_backups", "viewer"]  # fixtures

pytestmark = [pytest.mark.usefixtures("no_backups"), pytest.mark.one_backend("sqlite")]


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def add_backup(
    context: AppContext, status: BackupStatus, environment: str | None = "staging", **values: Any
) -> str:
    backup_id = new_id()
    row = {
        "id": backup_id,
        "run_id": backup_id,
        "origin": "request",
        "environment": environment,
        "database": "shop",
        "engine": "sqlite",
        "format": "sqlite",
        "status": status.value,
        "storage_url": "file:///nonexistent/x.db.gz",
        "object_key": "staging/shop/x.db.gz",
        "row_counts": {},
        "created_at": utcnow(),
        **values,
    }
    async with context.unit_of_work() as uow:
        await uow.session.execute(insert(Backup).values(**row))
    return backup_id


# --- secrets of database_url -------------------------------------------------------

SECRET_URLS = [
    # A password with characters the userinfo redaction stops at, written raw (the
    # schema accepts them and SQLAlchemy reads the password up to the last "@").
    ("postgresql://app:s3cr/etPW@db.example:5432/shop", "s3cr/etPW"),
    ("postgresql://app:s3cr?etPW@db.example:5432/shop", "s3cr?etPW"),
    ("postgresql://app:s3cr#etPW@db.example:5432/shop", "s3cr#etPW"),
    # URL-encoded and short ones.
    ("postgresql://app:p%40ss%2Fw0rd@db.example:5432/shop", "p%40ss%2Fw0rd"),
    ("postgresql://app:x@db.example:5432/shop", "app:x@"),
]


async def test_a_viewer_never_reads_the_database_password(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, viewer: IssuedToken
) -> None:
    """A raw "/", "?" or "#" in the password ended the userinfo redaction early: the rest
    of the password was shown to viewers (and became part of the database's name). Such
    a URL is now refused; encoded and short passwords stay hidden."""
    for url, secret in SECRET_URLS:
        response = await client.put(
            "/v1/environments/staging", json={"database_url": url}, headers=admin.headers
        )
        if response.status_code == 422:
            problem(response, 422)
            continue
        assert response.status_code in (200, 201), response.text
        for path in ("/v1/environments/staging", "/v1/environments"):
            shown = await client.get(path, headers=viewer.headers)
            assert shown.status_code == 200, shown.text
            assert secret not in shown.text, (url, path, shown.text)
        audit = await client.get("/v1/audit-events", headers=admin.headers)
        assert audit.status_code == 200, audit.text
        assert secret not in audit.text, (url, audit.text)
    for url, _ in SECRET_URLS[:3]:
        response = await client.put(
            "/v1/environments/raw", json={"database_url": url}, headers=admin.headers
        )
        problem(response, 422)


# --- who may do what ---------------------------------------------------------------


async def test_roles_below_admin_cannot_delete_or_restore(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, tmp_path: Path
) -> None:
    backup_id = await add_backup(context, BackupStatus.SUCCESS)
    for role in (Role.VIEWER, Role.DEPLOYER, Role.OPERATOR):
        token = await issue_token(context, role)
        problem(await client.delete(f"/v1/backups/{backup_id}", headers=token.headers), 403)
        body = {"backup_id": backup_id, "confirm": "shop"}
        problem(
            await client.post("/v1/restores", json=body, headers={**token.headers, **key()}),
            403,
        )
    viewer = await issue_token(context, Role.VIEWER)
    problem(
        await client.post(
            "/v1/backups", json={"environment": "staging"}, headers={**viewer.headers, **key()}
        ),
        403,
    )
    problem(
        await client.post(f"/v1/backups/{backup_id}/verify", headers={**viewer.headers, **key()}),
        403,
    )


async def test_an_environment_token_reaches_no_other_environments_backups(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, tmp_path: Path
) -> None:
    await put_environment(client, admin, "dev")
    await put_environment(
        client, admin, "staging", database_url=sqlite_url(make_sqlite(tmp_path / "s.db"))
    )
    backup_id = await add_backup(context, BackupStatus.SUCCESS)
    token = await issue_token(context, Role.ADMIN, environment="dev")
    listed = await client.get("/v1/backups", headers=token.headers)
    assert listed.status_code == 403 or backup_id not in listed.text, listed.text
    read = await client.get(f"/v1/backups/{backup_id}", headers=token.headers)
    assert read.status_code in (403, 404), read.text
    for method, path, body in (
        ("POST", "/v1/backups", {"environment": "staging"}),
        ("POST", "/v1/backups", {"self": True}),
        ("POST", f"/v1/backups/{backup_id}/verify", None),
        ("POST", "/v1/restores", {"backup_id": backup_id, "confirm": "shop"}),
        ("DELETE", f"/v1/backups/{backup_id}", None),
    ):
        response = await client.request(method, path, json=body, headers={**token.headers, **key()})
        assert response.status_code in (403, 404), (method, path, response.text)


# --- odd inputs --------------------------------------------------------------------

BACKUP_BODIES: list[Any] = [
    None,
    [],
    "staging",
    42,
    {},
    {"environment": None},
    {"environment": 5},
    {"environment": "x" * 100_000},
    {"environment": "st\u00e4ging"},
    {"environment": "staging\x00"},
    {"environment": "staging", "self": True},
    {"self": False},
    {"self": "true"},
    {"self": None},
    {"environment": "staging", "dry_run": "yes"},
    {"environment": "staging", "surprise": 1},
    {"self": True, "surprise": 1},
    {"self_": True},  # the field's Python name is no name of the API's
]


async def test_odd_backup_bodies_are_422_problems(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    for body in BACKUP_BODIES:
        response = await client.post("/v1/backups", json=body, headers={**admin.headers, **key()})
        problem(response, 422)


RESTORE_BODIES: list[Any] = [
    None,
    {},
    {"backup_id": None, "confirm": "shop"},
    {"backup_id": 7, "confirm": "shop"},
    {"backup_id": "b" * 100_000, "confirm": "shop"},
    {"backup_id": "x", "confirm": "shop\x00"},
    {"backup_id": "x", "confirm": "shop\nshop"},
    {"backup_id": "x", "confirm": None},
    {"backup_id": "x", "confirm": "shop", "force": "true"},
    {"backup_id": "x", "confirm": "shop", "force": 1},
    {"backup_id": "x", "confirm": "shop", "dry_run": "false"},
    {"backup_id": "x", "confirm": "shop", "reason": "r" * 3000},
    {"backup_id": "x", "confirm": "shop", "surprise": True},
    {"backup_id": "x", "confirm": "shop", "reason": "\x00"},
]


async def test_odd_restore_bodies_are_422_problems(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    for body in RESTORE_BODIES:
        response = await client.post("/v1/restores", json=body, headers={**admin.headers, **key()})
        problem(response, 422)


async def test_not_json_and_huge_bodies_are_problems(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    headers = {**admin.headers, **key(), "Content-Type": "application/json"}
    for content in (b"{", b"\xff\xfe", b'{"environment": "staging"' + b" " * 10):
        response = await client.post("/v1/backups", content=content, headers=headers)
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        response = await client.post("/v1/restores", content=content, headers=headers)
        assert 400 <= response.status_code < 500, response.text


QUERIES = [
    "cursor=garbage",
    "cursor=%00%01",
    "cursor=" + "A" * 5000,
    "status=bogus",
    "limit=0",
    "limit=-1",
    "limit=100000000000000000000",
    "limit=abc",
    "verified=maybe",
    "self=2",
    "environment=%00",
    "database=%00",
    "origin=alien",
]


async def test_odd_list_queries_are_4xx_problems(
    client: httpx.AsyncClient, admin: IssuedToken
) -> None:
    for path in ("/v1/backups", "/v1/restores"):
        for query in QUERIES:
            response = await client.get(f"{path}?{query}", headers=admin.headers)
            if response.status_code == 200:  # a filter the list does not have is ignored
                continue
            assert 400 <= response.status_code < 500, (path, query, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")


def routes(odd: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v1/backups/{odd}"),
        ("DELETE", f"/v1/backups/{odd}"),
        ("POST", f"/v1/backups/{odd}/verify"),
        ("GET", f"/v1/restores/{odd}"),
    ]


ODD_IDS = ["%00", "..", "..%2F..%2Fetc", "x" * 5000, "%F0%9F%92%A5", "%0A", "'%20OR%201=1"]


async def test_odd_path_ids_are_4xx_problems(client: httpx.AsyncClient, admin: IssuedToken) -> None:
    for odd, (method, path) in ((o, r) for o in ODD_IDS for r in routes(o)):
        response = await client.request(method, path, headers={**admin.headers, **key()})
        assert 400 <= response.status_code < 500, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), (
            odd,
            method,
            path,
            response.text,
        )


# --- backups in each status --------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [BackupStatus.IN_PROGRESS, BackupStatus.FAILURE, BackupStatus.DELETED],
)
async def test_a_backup_not_stored_is_neither_verified_nor_restored(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    tmp_path: Path,
    status: BackupStatus,
) -> None:
    await put_environment(
        client, admin, "staging", database_url=sqlite_url(make_sqlite(tmp_path / "s.db"))
    )
    backup_id = await add_backup(context, status)
    problem(
        await client.post(f"/v1/backups/{backup_id}/verify", headers={**admin.headers, **key()}),
        409,
    )
    body = {"backup_id": backup_id, "confirm": "shop"}
    problem(await client.post("/v1/restores", json=body, headers={**admin.headers, **key()}), 409)
    body = {**body, "force": True, "reason": "because"}
    problem(await client.post("/v1/restores", json=body, headers={**admin.headers, **key()}), 409)
    deleted = await client.delete(f"/v1/backups/{backup_id}", headers=admin.headers)
    if status is BackupStatus.IN_PROGRESS:
        problem(deleted, 409)
    else:
        assert deleted.status_code in (200, 409), deleted.text
        assert deleted.status_code != 500


async def test_an_unverifiable_backup_needs_force_and_a_reason(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, tmp_path: Path
) -> None:
    await put_environment(
        client, admin, "staging", database_url=sqlite_url(make_sqlite(tmp_path / "s.db"))
    )
    backup_id = await add_backup(context, BackupStatus.UNVERIFIABLE, size_bytes=1, sha256="0" * 64)
    body: dict[str, Any] = {"backup_id": backup_id, "confirm": "shop"}
    problem(await client.post("/v1/restores", json=body, headers={**admin.headers, **key()}), 409)
    body["force"] = True
    problem(await client.post("/v1/restores", json=body, headers={**admin.headers, **key()}), 422)
    body["reason"] = ""
    response = await client.post("/v1/restores", json=body, headers={**admin.headers, **key()})
    assert response.status_code == 422, response.text
    body["reason"] = "   "
    response = await client.post("/v1/restores", json=body, headers={**admin.headers, **key()})
    assert response.status_code == 422, response.text


async def test_a_wrong_confirm_is_refused(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, tmp_path: Path
) -> None:
    await put_environment(
        client, admin, "staging", database_url=sqlite_url(make_sqlite(tmp_path / "s.db"))
    )
    backup_id = await add_backup(context, BackupStatus.SUCCESS, size_bytes=1, sha256="0" * 64)
    for confirm in ("", "SHOP", " shop", "shop ", "staging", "staging/shop"):
        body = {"backup_id": backup_id, "confirm": confirm}
        response = await client.post("/v1/restores", json=body, headers={**admin.headers, **key()})
        assert response.status_code == 422, (confirm, response.text)


# --- concurrency and idempotency ---------------------------------------------------


async def restorable(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, tmp_path: Path
) -> str:
    path = make_sqlite(tmp_path / "shop.db")
    await put_environment(client, admin, "staging", database_url=sqlite_url(path))
    return await add_backup(context, BackupStatus.SUCCESS, size_bytes=1, sha256="0" * 64)


async def test_two_restores_of_one_database_at_once_make_one(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, tmp_path: Path
) -> None:
    backup_id = await restorable(client, context, admin, tmp_path)
    body = {"backup_id": backup_id, "confirm": "shop"}
    responses = await asyncio.gather(
        *(
            client.post("/v1/restores", json=body, headers={**admin.headers, **key()})
            for _ in range(4)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert problem(response, 409)["type"].endswith("/restore-in-progress")


async def test_a_key_replayed_with_another_body_is_refused(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, tmp_path: Path
) -> None:
    backup_id = await restorable(client, context, admin, tmp_path)
    headers = {**admin.headers, "Idempotency-Key": "restore-once"}
    body = {"backup_id": backup_id, "confirm": "shop"}
    first = await client.post("/v1/restores", json=body, headers=headers)
    assert first.status_code == 202, first.text
    other = {**body, "force": True, "reason": "other"}
    again = await client.post("/v1/restores", json=other, headers=headers)
    assert again.status_code in (409, 422), again.text
    assert again.headers["content-type"].startswith("application/problem+json")
    backup_headers = {**admin.headers, "Idempotency-Key": "backup-once"}
    first = await client.post(
        "/v1/backups", json={"environment": "staging", "dry_run": False}, headers=backup_headers
    )
    assert first.status_code == 202, first.text
    again = await client.post("/v1/backups", json={"self": True}, headers=backup_headers)
    assert again.status_code in (409, 422), again.text


async def test_the_backup_of_an_active_restore_is_not_deleted(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, tmp_path: Path
) -> None:
    backup_id = await restorable(client, context, admin, tmp_path)
    body = {"backup_id": backup_id, "confirm": "shop"}
    queued = await client.post("/v1/restores", json=body, headers={**admin.headers, **key()})
    assert queued.status_code == 202, queued.text
    deleted = await client.delete(f"/v1/backups/{backup_id}", headers=admin.headers)
    assert problem(deleted, 409)["type"].endswith("/backup-in-use")
    # Retention passes it by too, however old, and goes on with the others.
    older = await add_backup(
        context, BackupStatus.SUCCESS, size_bytes=1, sha256="0" * 64, object_key="old.db.gz"
    )
    done = await retention.apply(context, now=utcnow() + dt.timedelta(days=36600))
    assert backup_id not in done.deleted
    assert older in done.deleted
    read = await client.get(f"/v1/backups/{backup_id}", headers=admin.headers)
    assert read.json()["status"] == "success"


# --- secrets in a failed backup ----------------------------------------------------

PASSWORD = "Pw9xQz"


@pytest.mark.usefixtures("worker")
async def test_a_failed_postgresql_backup_shows_no_password(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    viewer: IssuedToken,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = f"no_such_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/{database}"
    await put_environment(client, admin, "staging", database_url=url)
    caplog.set_level(logging.DEBUG)
    response = await client.post(
        "/v1/backups",
        json={"environment": "staging"},
        headers={**admin.headers, **key(), "Prefer": "wait=60"},
        timeout=90,
    )
    assert response.status_code in (201, 202), response.text
    backup = response.json()
    assert backup["status"] == "failure", backup
    seen = [response.text]
    for path in (
        f"/v1/backups/{backup['id']}",
        "/v1/backups",
        f"/v1/runs/{backup['run_id']}",
        f"/v1/runs/{backup['run_id']}/events",
        "/v1/environments/staging",
    ):
        read = await client.get(path, headers=viewer.headers)
        assert read.status_code == 200, (path, read.text)
        seen.append(read.text)
    seen.append((await client.get("/v1/audit-events", headers=admin.headers)).text)
    async with context.sessionmaker() as session:
        seen.extend(str(e.data) for e in await session.scalars(select(OutboxEvent)))
    seen.append(caplog.text)
    leaks = [text for text in seen if PASSWORD in text]
    assert not leaks, leaks


# --- the command line --------------------------------------------------------------

FORMULA_OPS = Path(sys.executable).parent / "formula-ops"


async def cli(url: str, token: IssuedToken, *args: str, stdin: str = "") -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    env |= {"FORMULA_OPS_URL": url, "FORMULA_OPS_TOKEN": token.value}
    result = await asyncio.to_thread(
        subprocess.run,
        [str(FORMULA_OPS), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result.returncode, result.stdout, result.stderr


async def test_the_restore_command_asks_nobody_without_a_terminal(
    app: FastAPI,
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    viewer: IssuedToken,
    tmp_path: Path,
) -> None:
    backup_id = await restorable(client, context, admin, tmp_path)
    operator = await issue_token(context, Role.OPERATOR)
    async with live(app, context) as url:
        # Piped "yes"/the name on stdin does not stand for the typed confirmation.
        code, out, err = await cli(url, admin, "restore", backup_id, stdin="shop\n")
        assert code == 2, (out, err)
        code, out, err = await cli(url, admin, "restore", backup_id, "--confirm", "", stdin="")
        assert code == 1, (out, err)
        code, out, err = await cli(url, admin, "restore", backup_id, "--confirm", "other")
        assert code == 1, (out, err)
        code, out, err = await cli(url, admin, "restore", backup_id, "--force", "--confirm", "shop")
        assert code == 2, (out, err)
        for token in (operator, viewer):
            code, out, err = await cli(url, token, "restore", backup_id, "--confirm", "shop")
            assert code != 0, (out, err)
        listed = await client.get("/v1/restores", headers=admin.headers)
        assert listed.json()["items"] == []
        code, out, err = await cli(url, admin, "restore", backup_id, "--confirm", "shop")
        assert code == 0, (out, err)
        assert backup_id in out


async def test_an_environment_token_reaches_no_other_environments_restores(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken, tmp_path: Path
) -> None:
    backup_id = await restorable(client, context, admin, tmp_path)
    await put_environment(client, admin, "dev")
    body = {"backup_id": backup_id, "confirm": "shop"}
    queued = await client.post("/v1/restores", json=body, headers={**admin.headers, **key()})
    assert queued.status_code == 202, queued.text
    restore_id = queued.json()["id"]
    token = await issue_token(context, Role.ADMIN, environment="dev")
    listed = await client.get("/v1/restores", headers=token.headers)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
    listed = await client.get("/v1/restores?environment=staging", headers=token.headers)
    assert listed.status_code in (200, 403), listed.text
    assert restore_id not in listed.text, listed.text
    for path in (
        f"/v1/restores/{restore_id}",
        f"/v1/runs/{restore_id}",
        f"/v1/runs/{restore_id}/events",
        f"/v1/runs/{backup_id}",
    ):
        response = await client.get(path, headers=token.headers)
        assert response.status_code in (403, 404), (path, response.text)
        problem(response, response.status_code)
    runs = await client.get("/v1/runs", headers=token.headers)
    assert restore_id not in runs.text, runs.text


async def test_a_backup_of_an_environment_gone_since_answers_no_500(
    client: httpx.AsyncClient, context: AppContext, admin: IssuedToken
) -> None:
    backup_id = await add_backup(
        context, BackupStatus.SUCCESS, environment="gone", size_bytes=1, sha256="0" * 64
    )
    verify = await client.post(
        f"/v1/backups/{backup_id}/verify", headers={**admin.headers, **key()}
    )
    assert verify.status_code in (202, 409), verify.text
    body = {"backup_id": backup_id, "confirm": "shop"}
    restore = await client.post("/v1/restores", json=body, headers={**admin.headers, **key()})
    assert problem(restore, 409)["type"].endswith("/restore-target-unavailable")
    own = await add_backup(
        context, BackupStatus.SUCCESS, environment=None, size_bytes=1, sha256="0" * 64
    )
    restore = await client.post(
        "/v1/restores",
        json={"backup_id": own, "confirm": "shop"},
        headers={**admin.headers, **key()},
    )
    assert problem(restore, 409)["type"].endswith("/control-plane-restore")
