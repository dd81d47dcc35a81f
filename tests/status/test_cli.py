"""``formula-ops status`` against a served application, as a separate process."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import sys
from pathlib import Path

from app.core.context import AppContext
from tests.status import data

COMMAND = str(Path(sys.executable).parent / "formula-ops")


async def run(url: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    env["FORMULA_OPS_URL"] = url  # no token: the public status needs none
    process = await asyncio.create_subprocess_exec(
        COMMAND,
        "status",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_prints_the_overall_status_components_and_incidents(
    served: str, context: AppContext
) -> None:
    page = await data.seed_components(context)
    await data.open_incident(context, page)
    await data.maintenance(context, page, status="scheduled", starts_in=dt_days(1))
    code, out, err = await run(served)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Formula Ops: major (Partial System Outage)"
    assert lines[1] == "component\tgroup\tstatus"
    assert "Backend API\tApplication\tpartial_outage" in lines
    assert "Database\tData\toperational" in lines
    assert not any(line.startswith(("Application\t", "Data\t")) for line in lines)
    assert any(
        line.startswith("Incident Elevated error rate on the Backend API (major impact")
        and line.endswith("We are investigating elevated error rates on the API.")
        for line in lines
    ), out
    assert any(
        line.startswith("Maintenance Database upgrade to PostgreSQL 16 (scheduled")
        for line in lines
    ), out
    assert data.INTERNAL_UPDATE not in out


async def test_status_of_an_unreachable_server_exits_2(context: AppContext) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = await run(f"http://127.0.0.1:{port}")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err


def dt_days(days: int) -> dt.timedelta:

    return dt.timedelta(days=days)
