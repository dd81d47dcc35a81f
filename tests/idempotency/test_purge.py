"""Expired idempotency keys are purged by the worker's scheduled job."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from app.core.context import AppContext
from app.core.db import utcnow
from app.core.settings import Settings
from app.idempotency.models import IdempotencyRecord
from workers.cron import purge_idempotency_keys
from workers.main import cron_jobs
from workers.state import WorkerState


def _record(key: str, expires_at: dt.datetime) -> IdempotencyRecord:
    return IdempotencyRecord(
        token_id="t",
        key_hash=key * 64,
        fingerprint="f" * 64,
        method="POST",
        path="/v1/tokens",
        state="completed",
        created_at=expires_at - dt.timedelta(hours=24),
        expires_at=expires_at,
    )


async def test_purge_removes_only_expired_keys(context: AppContext) -> None:
    now = utcnow()
    async with context.unit_of_work() as uow:
        uow.session.add_all(
            [_record("a", now - dt.timedelta(minutes=1)), _record("b", now + dt.timedelta(hours=1))]
        )
    ctx: WorkerState = {"settings": context.settings, "context": context, "worker_id": "test"}
    assert await purge_idempotency_keys(ctx) == 1
    async with context.sessionmaker() as session:
        left = (await session.scalars(select(IdempotencyRecord.key_hash))).all()
    assert left == ["b" * 64]


def test_purge_is_scheduled_once_an_hour_on_one_worker() -> None:
    (job,) = [c for c in cron_jobs(Settings()) if c.coroutine is purge_idempotency_keys]
    assert job.unique
    assert job.minute == 17
