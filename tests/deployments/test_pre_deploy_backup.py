"""A deployment to an environment with a database backs it up first (a real SQLite
database, the local-folder storage of the test's state directory): the backup is
stored, read back and named in the evidence, and a failed backup fails the deployment
before anything is deployed. The daily health check then reports the backup's age."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from sqlalchemy import select

from app.auth.roles import Role
from app.backups.models import Backup
from app.core.context import AppContext
from app.environments.models import Environment
from tests.deployments.conftest import Env, running_version
from tests.factories import IssuedToken, issue_token

WAIT = {"Prefer": "wait=60"}


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


def make_database(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    conn.executemany("INSERT INTO orders (total) VALUES (?)", [(i * 1.5,) for i in range(rows)])
    conn.commit()
    conn.close()


async def set_database(context: AppContext, url: str) -> None:
    async with context.unit_of_work() as uow:
        environment = await uow.session.get(Environment, "staging")
        assert environment is not None
        environment.database = "app"
        environment.database_url = url


async def deploy(client: httpx.AsyncClient, token: IssuedToken, version: str) -> httpx.Response:
    body = {"environment": "staging", "service": "backend", "version": version}
    return await client.post(
        "/v1/deployments", json=body, headers={**token.headers, **WAIT}, timeout=90
    )


@pytest.mark.usefixtures("worker")
async def test_the_pre_deploy_backup_is_stored_read_back_and_in_the_evidence(
    context: AppContext,
    client: httpx.AsyncClient,
    deployer: IssuedToken,
    operator: IssuedToken,
    staging: Env,
    tmp_path: Path,
) -> None:
    database = tmp_path / "app.db"
    make_database(database, 1500)
    await set_database(context, f"sqlite:///{database}")

    response = await deploy(client, deployer, "2.0.0")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "success", body["failure"]
    evidence = (
        await client.get(f"/v1/deployments/{body['id']}/evidence", headers=deployer.headers)
    ).json()
    backup = evidence["backup"]
    assert backup["status"] == "success"
    assert backup["link"] == f"/v1/backups/{backup['backup_id']}"

    async with context.unit_of_work() as uow:
        row = await uow.session.get(Backup, backup["backup_id"])
    assert row is not None
    assert (row.status, row.origin, row.run_id) == ("success", "deployment", body["id"])
    assert row.row_counts == {"orders": 1500}
    stored = Path(unquote(urlsplit(row.storage_url).path))
    content = await asyncio.to_thread(stored.read_bytes)
    assert content[:2] == b"\x1f\x8b"  # gzip
    assert hashlib.sha256(content).hexdigest() == row.sha256 == backup["sha256"]
    assert len(content) == row.size_bytes == backup["size_bytes"]
    assert stored.name.endswith(f"_{row.id}.db.gz")
    assert stored.parent.name == "app"
    assert stored.parent.parent.name == "staging"
    assert not list(stored.parent.glob("*.partial"))

    # The daily health check reports its age: fresh, but not verified yet (a warning).
    check = await client.post("/v1/health-checks", headers={**operator.headers, **WAIT})
    steps = {s["name"]: s for s in check.json()["steps"]}
    targets = {t["target"]: t for t in steps["newest backup"]["result"]["targets"]}
    assert targets["staging"]["newest_backup_id"] == row.id
    assert 0 <= targets["staging"]["age_hours"] < 1
    assert targets["staging"]["verified_backup_id"] is None
    assert targets["staging"]["level"] == "warning"


@pytest.mark.usefixtures("worker")
@pytest.mark.one_backend("sqlite")
async def test_a_failed_backup_fails_the_deployment_before_anything_is_deployed(
    context: AppContext,
    client: httpx.AsyncClient,
    deployer: IssuedToken,
    staging: Env,
    tmp_path: Path,
) -> None:
    first = await deploy(client, deployer, "1.0.0")  # no database yet: no backup step
    assert first.json()["status"] == "success", first.json()["failure"]
    await set_database(context, f"sqlite:///{tmp_path / 'missing.db'}")

    response = await deploy(client, deployer, "2.0.0")
    body = response.json()
    assert body["status"] == "failure", body
    steps = {s["action"]: s for s in body["steps"]}
    assert steps["backup_database"]["status"] == "failure"
    assert "no SQLite database" in steps["backup_database"]["error"]
    assert steps["deploy"]["status"] in ("skipped", "pending", "cancelled")
    assert await running_version(staging, "backend") == "1.0.0"
    async with context.unit_of_work() as uow:
        rows = (await uow.session.scalars(select(Backup))).all()
    assert [(r.status, r.origin) for r in rows] == [("failure", "deployment")]
    assert rows[0].upload_id is None  # the partial file was removed at once
    storage = Path(context.settings.state_dir) / "backups"
    assert not list(storage.rglob("*.partial"))
