"""``formula-ops backup`` and ``formula-ops backups …`` against a live API and a real
worker, with stdout a pipe (plain, tab-separated tables)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.core.context import AppContext
from tests.backups.helpers import (
    flip_byte,
    make_sqlite,
    no_backups,
    operator,
    put_environment,
    sqlite_url,
)
from tests.factories import IssuedToken
from tests.helpers import live

__all__ = ["no_backups", "operator"]  # fixtures

FORMULA_OPS = Path(sys.executable).parent / "formula-ops"

pytestmark = [pytest.mark.usefixtures("no_backups"), pytest.mark.usefixtures("worker")]


async def cli(url: str, token: IssuedToken, *args: str, code: int = 0) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    env |= {"FORMULA_OPS_URL": url, "FORMULA_OPS_TOKEN": token.value}
    result = await asyncio.to_thread(
        subprocess.run,
        [str(FORMULA_OPS), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == code, (
        f"`formula-ops {' '.join(args)}` exited {result.returncode}, expected {code}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.one_backend("sqlite")
async def test_backup_list_show_verify_and_delete_from_the_command_line(
    app: FastAPI,
    context: AppContext,
    client: httpx.AsyncClient,
    admin: IssuedToken,
    operator: IssuedToken,
    tmp_path: Path,
) -> None:
    await put_environment(
        client, admin, "staging", database_url=sqlite_url(make_sqlite(tmp_path / "shop.db"))
    )
    await put_environment(client, admin, "nodb")
    await put_environment(
        client, admin, "gone", database_url=sqlite_url(tmp_path / "missing" / "gone.db")
    )
    async with live(app, context) as url:
        planned = await cli(url, operator, "backup", "--env", "staging", "--dry-run")
        assert "Dry run: staging/shop (sqlite, sqlite)" in planned
        refused = await cli(url, operator, "backup", "--env", "nodb", code=1)
        assert "Not backed up" in refused
        assert "no-database" not in refused  # the title and detail, not the type
        await cli(url, operator, "backup", code=2)  # neither --env nor --self
        lost = await cli(url, operator, "backup", "--env", "gone", "--wait", code=1)
        assert "failure" in lost
        assert "no SQLite database" in lost

        taken = await cli(url, operator, "backup", "--env", "staging", "--wait")
        assert "succeeded" in taken
        assert "SHA-256" in taken
        listed = await cli(url, operator, "backups", "list", "--env", "staging")
        header, *rows = listed.splitlines()
        assert header.split("\t") == [
            "id",
            "target",
            "status",
            "origin",
            "size",
            "created",
            "verified",
        ]
        assert len(rows) == 1
        backup_id, target, status, origin, *_ = rows[0].split("\t")
        assert (target, status, origin) == ("staging/shop", "success", "request")
        assert rows[0].endswith("\t-")  # not verified yet

        shown = await cli(url, operator, "backups", "show", backup_id)
        lines = dict(line.split("\t", 1) for line in shown.splitlines()[1:])
        assert lines["status"] == "success"
        assert lines["rows orders"] == "50"
        assert lines["storage_url"].startswith("file://")

        verified = await cli(url, operator, "backups", "verify", backup_id, "--wait")
        assert "Restored in" in verified
        listed = await cli(url, operator, "backups", "list", "--status", "success")
        assert not listed.splitlines()[1].endswith("\t-")

        # Operators may not delete; the newest verified backup is kept even for admins.
        await cli(url, operator, "backups", "delete", backup_id, code=2)
        kept = await cli(url, admin, "backups", "delete", backup_id, code=1)
        assert "newest verified" in kept

        # A changed byte: the drill fails and so does the command.
        stored = Path(lines["storage_url"].removeprefix("file://"))
        flip_byte(stored, -10)
        failed = await cli(url, operator, "backups", "verify", backup_id, "--wait", code=1)
        assert "unverifiable" in failed
        missing = await cli(url, operator, "backups", "show", "nope", code=2)
        assert "not found" in missing.lower()
