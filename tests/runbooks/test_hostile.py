"""Hostile input to the runbook catalog: request bodies no response or database can
carry, catalog steps holding secrets read by viewers, catalog files built to hang the
start-up, and log lines built to stop the security scan."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app.auth.roles import Role
from app.bootstrap import build_registry
from app.core.context import AppContext
from app.core.settings import Settings
from app.runbooks.actions.security import SAMPLE_CHARS, scan
from app.runbooks.catalog import CatalogError, load_catalog
from tests.factories import issue_token
from tests.helpers import run_worker_burst
from tests.runbook_actions.conftest import add_environment

# Raw JSON texts: "\ud800" is valid JSON that decodes to a lone surrogate.
UNCARRIABLE = {
    "surrogate in a value": '{"parameters": {"message": "a\\ud800b"}}',
    "surrogate pair reversed": '{"parameters": {"message": "\\udfff\\ud800"}}',
    "surrogate in a name": '{"parameters": {"message": "x", "\\ud800": 1}}',
    "surrogate in a name only": '{"parameters": {"\\udc80x": "y"}}',
    "escape sequence": '{"parameters": {"message": "\\u001b[31mred"}}',
    "line break": '{"parameters": {"message": "x\\nforged log line"}}',
    "next line (C1)": '{"parameters": {"message": "x\\u0085y"}}',
    "delete": '{"parameters": {"message": "x\\u007f"}}',
}


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("body", list(UNCARRIABLE.values()), ids=list(UNCARRIABLE))
async def test_parameter_text_no_response_can_carry_is_a_422(
    client: httpx.AsyncClient, context: AppContext, body: str, dry_run: bool
) -> None:
    operator = await issue_token(context, Role.OPERATOR)
    if dry_run:
        body = body[:-1] + ', "dry_run": true}'
    response = await client.post(
        "/v1/runbooks/test-echo/runs",
        content=body.encode(),
        headers={**operator.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"], problem
    listed = await client.get("/v1/runs", headers=operator.headers)
    assert listed.json()["items"] == []


async def test_printable_unicode_parameters_still_run(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    operator = await issue_token(context, Role.OPERATOR)
    message = "héllo 😀 ∑ 'quoted' $(x) \t"[:-2]  # no control character
    response = await client.post(
        "/v1/runbooks/test-echo/runs",
        json={"parameters": {"message": message}, "dry_run": True},
        headers=operator.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["parameters"]["message"] == message


CANARIES = ("cnryurlpw1234", "cnryheader1234", "cnryflag1234", "cnryenv1234")


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.ADMIN])
async def test_the_catalog_shows_no_secret_of_its_steps(
    client: httpx.AsyncClient, context: AppContext, role: Role
) -> None:
    token = await issue_token(context, role)
    detail = await client.get("/v1/runbooks/test-secret-step", headers=token.headers)
    assert detail.status_code == 200, detail.text
    listed = await client.get("/v1/runbooks?limit=200", headers=token.headers)
    for text in (detail.text, listed.text):
        assert not [c for c in CANARIES if c in text]
    steps = detail.json()["steps"]
    # What is not secret is still shown, references to parameters included.
    assert steps[0]["with"]["url"].endswith("@127.0.0.1:9/health")
    assert steps[0]["with"]["headers"]["X-Env"] == {"param": "environment"}
    assert steps[1]["with"]["argv"][0] == "tool"
    assert steps[1]["with"]["argv"][2] == {"param": "environment"}
    assert steps[1]["with"]["env"] == {"API_TOKEN": "[redacted]"}


def _write(folder: Path, name: str, extra: list[str]) -> None:
    lines = [
        f"name: {name}",
        "title: t",
        "kind: maintenance",
        "steps:",
        "  - name: a",
        "    action: wait",
        "    with:",
        "      seconds: 0",
        *extra,
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")


def test_a_catalog_file_of_aliases_is_refused_at_once(tmp_path: Path) -> None:
    # Ten aliases a level, five levels: 10^5 leaves from 300 bytes (nine levels hang
    # the start-up for minutes); a cycle of aliases never ends a walk.
    laughs = ["      l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"      l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 6)]
    _write(tmp_path / "a", "laughs", laughs)
    _write(tmp_path / "b", "cycle", ["      loop: &loop {again: *loop}"])
    _write(tmp_path / "c", "merged", ["      base: &base {x: 1}", "      more: {<<: *base}"])
    for folder, line in (("a", 10), ("b", 9), ("c", 10)):
        began = time.monotonic()
        with pytest.raises(CatalogError) as refused:
            load_catalog([tmp_path / folder], build_registry())
        assert time.monotonic() - began < 5
        assert refused.value.problems == [
            f"{folder}/{next((tmp_path / folder).iterdir()).name}:{line}: (file): aliases "
            "(*name) are not allowed: write the value out"
        ]


def test_a_deeply_nested_json_line_does_not_stop_the_security_scan() -> None:
    """A client can make a service log what it sent: one line nested deeper than Python
    recurses must not blind the scan to the failures around it."""
    nested = '{"message": "login failed", "ip": "10.0.0.9", "x": ' + "[" * 100_000 + "]" * 100_000
    failing = json.dumps({"message": "login failed", "ip": "203.0.113.7", "status": 401})
    lines: list[Any] = [failing, nested + "}", failing, "{" + '"a":{' * 50_000, failing]
    report = scan(lines, threshold=3)
    assert report.lines_scanned == 5
    assert [s.source for s in report.suspicious()] == ["203.0.113.7"]


@pytest.mark.one_backend("postgres")
@pytest.mark.usefixtures("worker")
async def test_a_password_in_a_listed_statement_is_not_shown(
    client: httpx.AsyncClient, context: AppContext, scratch_pg: str
) -> None:
    """db-active-queries lists the text of the target's running statements: one that
    sets a password (it would fail at its end: no such role) shows without it."""
    secret = f"cnry{uuid.uuid4().hex[:12]}"
    statement = (
        f"DO $$ BEGIN PERFORM pg_sleep(60); ALTER ROLE no_such_role_x PASSWORD '{secret}'; END $$"
    )
    conn = await psycopg.AsyncConnection.connect(scratch_pg, autocommit=True)
    task = asyncio.create_task(conn.execute(statement))
    try:
        await asyncio.sleep(1.5)
        await add_environment(context, "shop", scratch_pg)
        operator = await issue_token(context, Role.OPERATOR)
        viewer = await issue_token(context, Role.VIEWER)
        ran = await client.post(
            "/v1/runbooks/db-active-queries/runs",
            json={"parameters": {"environment": "shop", "older_than_seconds": 1}},
            headers={**operator.headers, "Prefer": "wait=60"},
        )
        assert ran.status_code == 201, ran.text
        run = (await client.get(f"/v1/runs/{ran.json()['id']}", headers=viewer.headers)).json()
        listed = {s["name"]: s for s in run["steps"]}["queries running longer than the limit"]
        shown = [row for row in listed["result"]["rows"] if "no_such_role_x" in str(row)]
        assert shown, listed["result"]  # the statement is listed…
        assert "PASSWORD '[redacted]'" in str(shown)
        events = await client.get(f"/v1/runs/{run['id']}/events", headers=viewer.headers)
        for text in (str(run), events.text):
            assert secret not in text  # …without its password
    finally:
        await conn.cancel_safe()
        await asyncio.gather(task, return_exceptions=True)
        await conn.close()


def test_the_security_scan_keeps_long_lines_in_their_shown_form() -> None:
    """Clients write what is logged: 10,000 addresses failing with 16 KiB lines would
    hold half a gigabyte of samples; a sample keeps at most its shown form."""
    secret = "cnry" + "s" * 40
    lines = [
        f'203.0.113.{n % 200} - - [03/Dec/2026:06:00:00 +0000] "GET /login?token={secret}&'
        + "x" * 15_000
        + f'{n} HTTP/1.1" 401 12'
        for n in range(400)
    ]
    report = scan(lines, threshold=1)
    assert len(report.sources) == 200
    kept = [line for s in report.sources.values() for line in s.samples] + list(report.samples)
    assert kept
    assert max(len(line) for line in kept) <= SAMPLE_CHARS + 1
    assert not [line for line in kept if secret in line]
    shown = report.as_data()["top_sources"][0]["sample_lines"]
    assert shown[0].startswith("203.0.113.")
    assert "token=[redacted]" in shown[0]


@pytest.mark.one_backend("postgres")
async def test_a_run_whose_environment_is_deleted_meanwhile_fails_cleanly(
    client: httpx.AsyncClient, context: AppContext, settings: Settings, scratch_pg: str
) -> None:
    admin = await issue_token(context, Role.ADMIN)
    viewer = await issue_token(context, Role.VIEWER)
    put = await client.put(
        "/v1/environments/gone", json={"database_url": scratch_pg}, headers=admin.headers
    )
    assert put.status_code in (200, 201), put.text
    started = await client.post(
        "/v1/runbooks/db-connections/runs",
        json={"parameters": {"environment": "gone"}},
        headers=admin.headers,
    )
    assert started.status_code == 202, started.text
    deleted = await client.delete("/v1/environments/gone", headers=admin.headers)
    assert deleted.status_code in (204, 409), deleted.text
    await run_worker_burst(settings)
    run = await client.get(f"/v1/runs/{started.json()['id']}", headers=viewer.headers)
    assert run.status_code == 200, run.text
    body = run.json()
    assert body["status"] in ("success", "failure"), body
    if deleted.status_code == 204:
        assert body["status"] == "failure"
        assert "no environment 'gone'" in body["failure"]["detail"]
    assert scratch_pg.split("@")[0] not in run.text
