"""The daily retention with a clock of the test's: expired backups deleted (object,
status, event, audit row by the schedule), the newest verified one of each database kept
whatever its age, another environment's own retention respected, what failed backups
left in the storage removed."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.backups import retention
from app.backups.models import Backup
from app.backups.storage import PARTIAL_SUFFIX
from app.core.context import AppContext
from app.core.db import insert_rows, utcnow
from app.outbox.models import OutboxEvent
from app.runs import service as run_service
from app.runs.models import Run
from tests.backups.helpers import (
    WAIT,
    make_sqlite,
    no_backups,
    operator,
    put_environment,
    sqlite_url,
)
from tests.factories import IssuedToken

__all__ = ["no_backups", "operator"]  # fixtures

pytestmark = [pytest.mark.usefixtures("no_backups"), pytest.mark.usefixtures("worker")]


def object_path(storage_url: str) -> Path:
    return Path(unquote(urlsplit(storage_url).path))


async def take(client: httpx.AsyncClient, token: IssuedToken, environment: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/backups",
        json={"environment": environment},
        headers={**token.headers, **WAIT, "Idempotency-Key": str(uuid.uuid4())},
        timeout=90,
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "success", response.text
    result: dict[str, Any] = response.json()
    return result


async def test_retention_deletes_expired_backups_but_the_newest_verified(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    operator: IssuedToken,
    tmp_path: Path,
) -> None:
    shop = make_sqlite(tmp_path / "shop.db")
    ledger = make_sqlite(tmp_path / "ledger.db", rows=3)
    await put_environment(
        client, admin, "staging", database_url=sqlite_url(shop), backup_retention_days=10
    )
    await put_environment(client, admin, "production", database_url=sqlite_url(ledger))
    first, second, third = [await take(client, operator, "staging") for _ in range(3)]
    other = await take(client, operator, "production")
    verify = await client.post(
        f"/v1/backups/{second['id']}/verify",
        headers={**operator.headers, **WAIT, "Idempotency-Key": str(uuid.uuid4())},
        timeout=90,
    )
    assert verify.json()["status"] == "success", verify.text

    # A failed backup whose upload a dead worker left behind, and an old unknown partial.
    key = "staging/shop/20200101T000000Z_failed.db.gz"
    leftover = object_path(context.settings.storage_url_value) / f"{key}.x{PARTIAL_SUFFIX}"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a backup")
    async with context.unit_of_work() as uow:
        await insert_rows(
            uow.session,
            [
                Backup(
                    id="failed",
                    run_id="failed",
                    environment="staging",
                    database="shop",
                    engine="sqlite",
                    format="sqlite",
                    status="failure",
                    storage_url=f"file:///nowhere/{key}",
                    object_key=key,
                    upload_id=leftover.name,
                    row_counts={},
                    created_at=utcnow(),
                )
            ],
        )

    # Nine days later nothing of staging (10 days) or production (30 days) has expired.
    nine = await retention.apply(context, now=utcnow() + dt.timedelta(days=9))
    assert nine.deleted == []
    assert nine.partials_removed == 1
    assert not leftover.exists()

    # Fifteen days later: staging's backups but the verified one are gone.
    later = await retention.apply(context, now=utcnow() + dt.timedelta(days=15))
    assert sorted(later.deleted) == sorted([first["id"], third["id"]])
    assert later.kept_newest_verified == [second["id"]]
    async with context.sessionmaker() as session:
        status = dict((await session.execute(select(Backup.id, Backup.status))).all())
        failed = await session.get(Backup, "failed")
        audited = list(
            (
                await session.execute(
                    select(AuditEvent.resource_id, AuditEvent.actor_name).where(
                        AuditEvent.action == "backup.delete",
                        AuditEvent.resource_id.in_(
                            [b["id"] for b in (first, second, third, other)]
                        ),
                    )
                )
            ).all()
        )
        deleted_events = list(
            await session.scalars(
                select(OutboxEvent.data).where(OutboxEvent.type == "backup.deleted")
            )
        )
    assert status == {
        first["id"]: "deleted",
        second["id"]: "success",
        third["id"]: "deleted",
        other["id"]: "success",
        "failed": "failure",
    }
    assert failed is not None
    assert failed.upload_id is None
    assert sorted(audited) == sorted(
        [(first["id"], "schedule:backup-retention"), (third["id"], "schedule:backup-retention")]
    )
    assert sorted(e["backup_id"] for e in deleted_events) == sorted([first["id"], third["id"]])
    assert not object_path(first["storage_url"]).exists()
    assert not object_path(third["storage_url"]).exists()
    assert object_path(second["storage_url"]).is_file()
    assert object_path(other["storage_url"]).is_file()

    # Forty days later production's backup (30 days, never verified) goes too; the
    # verified staging one still stays.
    much_later = await retention.apply(context, now=utcnow() + dt.timedelta(days=40))
    assert much_later.deleted == [other["id"]]
    assert much_later.kept_newest_verified == [second["id"]]


async def test_the_schedules_back_up_every_database_and_drill_the_newest(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    operator: IssuedToken,
    tmp_path: Path,
    backend: str,
) -> None:
    from workers.backups import scheduled_backups, scheduled_drills

    shop = make_sqlite(tmp_path / "shop.db")
    await put_environment(client, admin, "staging", database_url=sqlite_url(shop))
    await put_environment(client, admin, "nodb")
    state: Any = {"context": context}
    run_ids = await scheduled_backups(state)
    # staging, and the control plane itself (its SQLite file, or its PostgreSQL database).
    assert len(run_ids) == 2
    for run_id in run_ids:
        ended = await run_service.wait_terminal(context, run_id, None, 60)
        assert ended.status == "success", (ended.status, ended.failure_detail)
    async with context.sessionmaker() as session:
        rows = list(await session.scalars(select(Backup).order_by(Backup.environment)))
        runs = list(await session.scalars(select(Run).where(Run.id.in_(run_ids))))
    assert {r.origin for r in rows} == {"schedule"}
    assert {r.environment for r in rows} == {"staging", None}
    assert {r.requested_by for r in runs} == {"schedule:daily-backup"}

    drills = await scheduled_drills(state)
    assert len(drills) == len(run_ids)
    for run_id in drills:
        ended = await run_service.wait_terminal(context, run_id, None, 60)
        assert ended.status == "success", (ended.status, ended.failure_detail)
        assert ended.requested_by == "schedule:weekly-backup-drill"
    async with context.sessionmaker() as session:
        verified = list(await session.scalars(select(Backup.verified_at)))
    assert all(v is not None for v in verified)
