"""A ``formula-ops worker`` subprocess is SIGKILLed in the middle of a backup's upload:
once its lease expires and the run is taken over, the run ends failed (its step was not
idempotent), the backup ``failure``, and the janitor leaves no partial upload and no
object under the backup's key."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from app.backups import service
from app.backups.models import Backup
from app.backups.storage import PARTIAL_SUFFIX
from app.core.context import AppContext
from app.core.db import utcnow
from app.runs import service as run_service
from app.runs.models import TERMINAL_STATUSES, Run
from tests.backups.helpers import make_sqlite, no_backups, operator, put_environment, sqlite_url
from tests.factories import IssuedToken
from workers.main import create_worker, stop_worker

__all__ = ["no_backups", "operator"]  # fixtures

FORMULA_OPS = Path(sys.executable).parent / "formula-ops"
LEASE_SECONDS = 5
BLOB_BYTES = 1 << 20
ROWS = 200  # 200 MiB of random bytes: gzip takes seconds over them

pytestmark = [pytest.mark.usefixtures("no_backups"), pytest.mark.slow]


def worker_env(context: AppContext, tmp: Path) -> dict[str, str]:
    settings = context.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    assert settings.redis_url is not None
    env |= {
        "FORMULA_OPS_STATE_DIR": str(settings.state_dir),
        "FORMULA_OPS_REDIS_URL": settings.redis_url.get_secret_value(),
        "FORMULA_OPS_QUEUE_NAME": settings.queue_name,
        "FORMULA_OPS_REDIS_PREFIX": settings.redis_prefix,
        "FORMULA_OPS_RUN_LEASE_SECONDS": str(LEASE_SECONDS),
        "FORMULA_OPS_HEALTH_CHECK__SCHEDULE_ENABLED": "false",
        "FORMULA_OPS_BACKUPS__SCHEDULE_ENABLED": "false",
        "TMPDIR": str(tmp),  # where the dump's temporary copy goes (a kill leaves it)
    }
    if settings.storage_url:
        env["FORMULA_OPS_STORAGE_URL"] = settings.storage_url
    if settings.database_url is not None:
        env["FORMULA_OPS_DATABASE_URL"] = settings.database_url.get_secret_value()
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``formula-ops worker`` in a process group of its own, logging to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(FORMULA_OPS), "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def partials_under(root: Path) -> list[Path]:
    return list(root.rglob(f"*{PARTIAL_SUFFIX}")) if root.exists() else []


async def test_a_worker_killed_during_an_upload_leaves_a_failed_backup_and_no_litter(
    client: httpx.AsyncClient,
    context: AppContext,
    admin: IssuedToken,
    operator: IssuedToken,
    tmp_path: Path,
) -> None:
    source = await asyncio.to_thread(make_sqlite, tmp_path / "big" / "big.db", ROWS, BLOB_BYTES)
    await put_environment(client, admin, "staging", database_url=sqlite_url(source))
    response = await client.post(
        "/v1/backups",
        json={"environment": "staging"},
        headers={**operator.headers, "Idempotency-Key": "killed-upload"},
    )
    assert response.status_code == 202, response.text
    backup_id = response.json()["id"]
    root = Path(unquote(urlsplit(context.settings.storage_url_value).path))
    final = root / response.json()["object_key"]

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    log_path = tmp_path / "worker.log"
    worker = start_worker(worker_env(context, tmp), log_path)
    try:
        # Until the upload has begun: the backup names it and its partial file grows.
        deadline = time.monotonic() + 60
        while True:
            async with context.sessionmaker() as session:
                row = await session.get(Backup, backup_id)
            assert row is not None
            partials = partials_under(root)
            if row.upload_id and any(p.stat().st_size > 0 for p in partials):
                break
            assert row.status == "in_progress", (row.status, row.error)
            assert worker.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            await asyncio.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    upload_id = row.upload_id
    assert [p.name for p in partials_under(root)] == [upload_id]
    assert not final.exists()

    # The lease expires; the run is taken over and fails: its step may not run twice.
    await asyncio.sleep(LEASE_SECONDS + 0.5)
    async with context.sessionmaker() as session:
        run = await session.get(Run, backup_id)
        assert run is not None
        assert run.status == "in_progress"
        assert run.lease_expires_at is not None
        assert run.lease_expires_at < utcnow()
    reconciled = await run_service.reconcile(context, stale_after=dt.timedelta(0))
    assert reconciled.requeued_expired == 1
    # A burst worker would wait for the dead worker's job, which arq keeps in its queue
    # until that job's timeout: a worker runs until the run has ended (without the
    # periodic jobs: the janitor is called below).
    taker = create_worker(context.settings, handle_signals=False, poll_delay=0.02, cron_jobs=[])
    task = asyncio.create_task(taker.main())
    try:
        ended = await run_service.wait_terminal(context, backup_id, None, 60)
        assert ended.status in TERMINAL_STATUSES, ended.status
    finally:
        await stop_worker(taker, task)
    async with context.sessionmaker() as session:
        run = await session.get(Run, backup_id)
        backup = await session.get(Backup, backup_id)
    assert run is not None
    assert backup is not None
    assert run.status == "failure", (run.status, run.failure_type, run.failure_detail)
    assert run.failure_type == "/problems/interrupted"
    assert backup.status == "failure"
    assert backup.upload_id == upload_id  # left for the janitor
    assert "while it ran" in (backup.error or "")

    # The janitor removes the partial upload; nothing is stored under the key.
    assert await service.clean_partials(context) == 1
    assert partials_under(root) == []
    assert not final.exists()
    async with context.sessionmaker() as session:
        cleaned = await session.get(Backup, backup_id)
    assert cleaned is not None
    assert cleaned.upload_id is None
    assert cleaned.status == "failure"
    shown = await client.get(f"/v1/backups/{backup_id}", headers=operator.headers)
    assert shown.json()["status"] == "failure"
    await asyncio.to_thread(shutil.rmtree, tmp_path / "big")
    await asyncio.to_thread(shutil.rmtree, tmp)
