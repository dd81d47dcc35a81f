"""``formula-ops schedules list|show`` against a live API, with stdout a pipe (plain,
tab-separated tables)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.core.context import AppContext
from app.schedules import service
from tests.factories import IssuedToken
from tests.helpers import live
from tests.schedules.conftest import add_schedule, body, create

FORMULA_OPS = Path(sys.executable).parent / "formula-ops"

pytestmark = [pytest.mark.slow, pytest.mark.one_backend("sqlite")]


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


async def test_list_and_show(
    app: FastAPI,
    context: AppContext,
    client: httpx.AsyncClient,
    viewer: IssuedToken,
    operator: IssuedToken,
) -> None:
    nightly = await create(
        client, operator, body("nightly", timezone="Europe/Berlin", parameters={"label": "n"})
    )
    start = dt.datetime(2026, 6, 1, 1, tzinfo=dt.UTC)
    hourly = await add_schedule(context, next_run_at=start)
    await service.fire_due(context, start + 2 * dt.timedelta(hours=1) + dt.timedelta(seconds=5))

    async with live(app, context) as url:
        listed = await cli(url, viewer, "schedules", "list")
        header, *rows = listed.splitlines()
        assert header.split("\t") == [
            "id",
            "name",
            "runbook",
            "cron",
            "enabled",
            "next run",
            "last slot",
            "origin",
        ]
        by_name = {row.split("\t")[1]: row.split("\t") for row in rows}
        assert by_name["nightly"][0] == nightly["id"]
        assert by_name["nightly"][3] == "0 4 * * * (Europe/Berlin)"
        assert by_name["nightly"][4:] == [
            "yes",
            dt.datetime.fromisoformat(nightly["next_run_at"]).strftime("%Y-%m-%d %H:%M:%S"),
            "-",
            "api",
        ]
        assert by_name["hourly"][6] == "2026-06-01 03:00:00 fired"

        shown = await cli(url, viewer, "schedules", "show", hourly)
        fields = dict(line.split("\t", 1) for line in shown.split("\n\n")[0].splitlines()[1:])
        assert fields["name"] == "hourly"
        assert fields["last_slot_at"] == "2026-06-01 03:00:00"
        assert fields["next_run_at"] == "2026-06-01 04:00:00"
        slot_lines = shown.split("\n\n")[1].splitlines()
        assert slot_lines[0].split("\t") == ["slot", "status", "run", "detail"]
        assert [line.split("\t")[:2] for line in slot_lines[1:]] == [
            ["2026-06-01 03:00:00", "fired"],
            ["2026-06-01 02:00:00", "missed"],
            ["2026-06-01 01:00:00", "missed"],
        ]
        missing = await cli(
            url, viewer, "schedules", "show", "0193f0c2-5a4e-7d1c-9b2a-3c4d5e6f7a8b", code=2
        )
        assert "Schedule not found" in missing or "No schedule" in missing
