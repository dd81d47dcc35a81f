"""Token secrets appear once, in their creation response, and nowhere else: not in the
database, the audit trail, error bodies or the service's logs."""

from __future__ import annotations

import logging
import sqlite3
import subprocess

import httpx
import pytest

from app.auth.roles import Role
from app.core.context import AppContext
from tests.factories import issue_token


def database_dump(context: AppContext) -> str:
    settings = context.settings
    if settings.uses_sqlite:
        path = settings.database_url_value.removeprefix("sqlite+aiosqlite:///")
        with sqlite3.connect(path) as conn:
            return "\n".join(conn.iterdump())
    url = settings.database_url_value.replace("+psycopg", "")
    return subprocess.run(
        ["pg_dump", "--data-only", "--inserts", url], check=True, capture_output=True, text=True
    ).stdout


async def test_no_secret_outside_its_creation_response(
    client: httpx.AsyncClient, context: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = await issue_token(context, Role.ADMIN)
    secrets = [admin.value]
    for i in range(3):
        created = await client.post(
            "/v1/tokens",
            json={"name": f"leak-{i}", "role": "deployer"},
            headers={**admin.headers, "Idempotency-Key": f"leak-{i}"},
        )
        assert created.status_code == 201
        secrets.append(created.json()["token"])
        replay = await client.post(
            "/v1/tokens",
            json={"name": f"leak-{i}", "role": "deployer"},
            headers={**admin.headers, "Idempotency-Key": f"leak-{i}"},
        )
        assert replay.json()["token"] == secrets[-1]  # the replay is the creation response

    responses: list[httpx.Response] = []
    for value in secrets:
        bearer = {"Authorization": f"Bearer {value}"}
        responses.append(await client.get("/v1/audit-events", headers=bearer))
        responses.append(await client.get("/v1/tokens", headers=bearer))  # 403 for deployers
        responses.append(await client.get("/health", params={"access_token": value}))  # 400
        responses.append(
            await client.get("/v1/tokens", headers={"Authorization": f"Bearer {value[:-3]}abc"})
        )
        responses.append(
            await client.post(
                "/v1/tokens",
                json={"name": "x", "role": "viewer", "token": value, "secret": value},
                headers=admin.headers,
            )  # 422: unknown fields; the error must not echo them
        )
    responses.append(await client.get("/v1/tokens", headers=admin.headers))
    responses.append(await client.get("/v1/audit-events", headers=admin.headers))
    await client.delete(f"/v1/tokens/{secrets[1].split('_')[1]}", headers=admin.headers)

    dump = database_dump(context)
    logged = "\n".join(
        record.getMessage() + str(record.args) + str(record.exc_info or "")
        for record in caplog.records
        if record.name != "httpx"  # the test's own client logs its URLs
    )
    leaks = []
    for value in secrets:
        secret = value.split("_")[2][:32]
        for where, text in (("database", dump), ("logs", logged)):
            if secret in text:
                leaks.append((where, value[:12]))
        for response in responses:
            if secret in response.text:
                leaks.append(("response", str(response.request.url.path)))
    assert leaks == [], leaks
    assert len(dump) > 1000  # the dump really holds the tables
