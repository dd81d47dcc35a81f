"""The backup capability end to end, as an operator and an admin use it: through the
API and a real worker, on a real target database and a real storage.

- a PostgreSQL database with data, stored in S3 on a private Ceph RADOS Gateway (a
  real S3 implementation, :func:`tests.backups.s3_server.rgw_s3`), with a PostgreSQL
  control plane;
- a SQLite database stored in the local folder, with the embedded default (SQLite
  control plane);

each: back up → verify (a restore drill into a scratch database: counts match, the
restore time is recorded) → change the data → restore → the data is back, and the
safety backup the restore took first is there too.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from app.auth.roles import Role
from app.core.context import AppContext
from tests.backups.s3_server import S3Server
from tests.factories import IssuedToken, issue_token
from tests.helpers import create_pg_database, drop_pg_database

pytestmark = pytest.mark.slow

WAIT = {"Prefer": "wait=120"}
ORDERS, CUSTOMERS = 5000, 300


@pytest.fixture
async def operator(context: AppContext) -> IssuedToken:
    return await issue_token(context, Role.OPERATOR)


def fill_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, "
            "total numeric(10, 2))"
        )
        conn.execute(
            "INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, %s) g",
            (CUSTOMERS,),
        )
        conn.execute(
            "INSERT INTO orders (customer, total) "
            "SELECT 1 + g %% %s, g * 1.25 FROM generate_series(1, %s) g",
            (CUSTOMERS, ORDERS),
        )


def postgres_counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()
        customers = conn.execute("SELECT count(*) FROM customers").fetchone()
    assert orders is not None
    assert customers is not None
    return int(orders[0]), int(customers[0])


def damage_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id > 100")
        conn.execute("UPDATE customers SET name = 'gone'")


@pytest.fixture
def s3_storage(context: AppContext, rgw_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The control plane stores backups in a new bucket of the gateway (credentials
    from the usual AWS variables, as in production)."""
    bucket = rgw_s3.create_bucket()
    monkeypatch.setattr(context.settings, "storage_url", f"s3://{bucket}/formula-ops")
    monkeypatch.setattr(context.settings, "s3_endpoint_url", rgw_s3.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw_s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", rgw_s3.region)
    return bucket


async def backup_verify_change_restore(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    admin: IssuedToken,
    *,
    environment: str,
    database: str,
) -> tuple[dict, dict, dict]:
    created = await client.post(
        "/v1/backups",
        json={"environment": environment},
        headers={**operator.headers, **WAIT},
        timeout=150,
    )
    assert created.status_code == 201, created.text
    backup = created.json()
    assert backup["status"] == "success", backup
    assert backup["database"] == database
    assert backup["size_bytes"] > 0
    assert len(backup["sha256"]) == 64

    verified = await client.post(
        f"/v1/backups/{backup['id']}/verify", headers={**operator.headers, **WAIT}, timeout=150
    )
    assert verified.status_code in (200, 201), verified.text
    assert verified.json()["status"] == "success", verified.json()
    after = (await client.get(f"/v1/backups/{backup['id']}", headers=operator.headers)).json()
    assert after["verified_at"] is not None
    assert after["restore_seconds"] > 0
    return backup, after, verified.json()


async def restore(
    client: httpx.AsyncClient, admin: IssuedToken, backup_id: str, database: str
) -> dict:
    response = await client.post(
        "/v1/restores",
        json={"backup_id": backup_id, "confirm": database},
        headers={**admin.headers, **WAIT},
        timeout=150,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "success", body
    return body


@pytest.mark.usefixtures("worker")
@pytest.mark.one_backend("postgres")
async def test_postgresql_to_real_s3_backup_drill_restore(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    admin: IssuedToken,
    s3_storage: str,
    rgw_s3: S3Server,
) -> None:
    name = f"fo_accept_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    try:
        fill_postgres(url)
        put = await client.put(
            "/v1/environments/shop", json={"database_url": url}, headers=admin.headers
        )
        assert put.status_code in (200, 201), put.text
        backup, _after, _ = await backup_verify_change_restore(
            client, operator, admin, environment="shop", database=name
        )
        assert backup["storage_url"].startswith(f"s3://{s3_storage}/formula-ops/shop/{name}/")
        assert backup["storage_url"].endswith(f"_{backup['id']}.dump")
        assert backup["row_counts"] == {"public.customers": CUSTOMERS, "public.orders": ORDERS}
        key = backup["storage_url"].removeprefix(f"s3://{s3_storage}/")
        stored = rgw_s3.client().get_object(Bucket=s3_storage, Key=key)["Body"].read()
        assert hashlib.sha256(stored).hexdigest() == backup["sha256"]
        assert len(stored) == backup["size_bytes"]

        damage_postgres(url)
        assert postgres_counts(url) == (100, CUSTOMERS)
        done = await restore(client, admin, backup["id"], name)
        assert postgres_counts(url) == (ORDERS, CUSTOMERS)
        safety = (
            await client.get(
                f"/v1/backups/{done['pre_restore_backup_id']}", headers=operator.headers
            )
        ).json()
        assert (safety["status"], safety["origin"]) == ("success", "restore")
        assert safety["row_counts"]["public.orders"] == 100  # the damaged state, kept
        uploads = rgw_s3.client().list_multipart_uploads(Bucket=s3_storage)
        assert not uploads.get("Uploads")  # no unfinished upload left behind
    finally:
        drop_pg_database(name)


def sqlite_counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        return (
            conn.execute("SELECT count(*) FROM orders").fetchone()[0],
            conn.execute("SELECT count(*) FROM customers").fetchone()[0],
        )
    finally:
        conn.close()


@pytest.mark.usefixtures("worker")
@pytest.mark.one_backend("sqlite")
async def test_sqlite_to_the_local_folder_backup_drill_restore(
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    admin: IssuedToken,
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INT, total REAL)")
    conn.executemany(
        "INSERT INTO customers (name) VALUES (?)", [(f"c{i}",) for i in range(CUSTOMERS)]
    )
    conn.executemany(
        "INSERT INTO orders (customer, total) VALUES (?, ?)",
        [(i % CUSTOMERS, i * 1.25) for i in range(ORDERS)],
    )
    conn.commit()
    conn.close()
    put = await client.put(
        "/v1/environments/shop", json={"database_url": f"sqlite:///{path}"}, headers=admin.headers
    )
    assert put.status_code in (200, 201), put.text
    backup, _, _ = await backup_verify_change_restore(
        client, operator, admin, environment="shop", database="shop"
    )
    folder = (Path(context.settings.state_dir) / "backups").resolve()
    assert backup["storage_url"].startswith(f"{folder.as_uri()}/shop/shop/")
    assert backup["row_counts"] == {"customers": CUSTOMERS, "orders": ORDERS}

    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM orders WHERE id > 100")
    conn.commit()
    conn.close()
    assert sqlite_counts(path) == (100, CUSTOMERS)
    done = await restore(client, admin, backup["id"], "shop")
    assert sqlite_counts(path) == (ORDERS, CUSTOMERS)
    assert done["pre_restore_backup_id"]
    assert not list(folder.rglob("*.partial"))
