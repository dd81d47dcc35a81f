"""A distinct canary value in every secret-bearing field — service and smoke-test
environment values, URL userinfo (health URL, smoke URL, a Docker host, inside an
environment value, an environment's Docker host and Redis), a Docker host's TLS client
key, secret query parameters, secret argv flags (of a service command, a
smoke command, a Docker command), credential headers — then a real deployment, a broken
one that rolls back, and a health check with a live worker. Every GET endpoint (walked
from the app's route table), the dry-run plan, the event streams, the evidence and the
audit trail, read as viewer, deployer and operator (admins too, except the service
configuration they edit), and the logs, show none of them."""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import stat
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth.roles import Role
from app.core.context import AppContext
from app.core.logging import QUIETED_LOGGERS, configure_logging, log_handler
from app.core.routing import api_routes
from app.deployments.models import Deployment
from app.environments.models import Service
from app.runs.models import Run, RunEvent, Step
from app.webhooks.models import WebhookAttempt
from tests.factories import IssuedToken, issue_token
from tests.helpers import free_port, stop_services
from tests.webhooks.conftest import start_receiver
from tests.webhooks.test_hostile import EchoReceiver

pytestmark = pytest.mark.slow
WAIT = {"Prefer": "wait=90"}

# The service prints its environment and argv at start: a failing start shows the log.
SERVICE_SCRIPT = (
    "import os, runpy, sys\n"
    "print('env', dict(os.environ), 'argv', sys.argv, flush=True)\n"
    "sys.argv = [sys.argv[0]]\n"
    "runpy.run_module('app.embedded.sample_service', run_name='__main__')\n"
)
# The smoke command prints its environment and argv, then succeeds.
SMOKE_SCRIPT = "import os, sys; print(dict(os.environ)); print(sys.argv)"


PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"


class Canaries(dict[str, str]):
    def __missing__(self, field: str) -> str:
        value = self[field] = f"cnry{len(self):02d}x{uuid.uuid4().hex[:12]}"
        return value

    def found_in(self, text: str) -> list[str]:
        return [field for field, value in self.items() if value in text]


@pytest.fixture
def canaries() -> Canaries:
    return Canaries()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What `formula-ops` processes log, at DEBUG, as their logging is configured."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    quieted = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    configure_logging("DEBUG", handler=log_handler(stream))
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, value in quieted.items():
        logging.getLogger(name).setLevel(value)


def backend_service(port: int, c: Canaries) -> dict[str, Any]:
    return {
        "driver": "process",
        "config": {
            "command": [
                "{python}",
                "-c",
                SERVICE_SCRIPT,
                f"--password={c['service_argv_eq']}",
                "--api-key",
                c["service_argv_sep"],
                "--pass",
                c["service_argv_pass"],
                f"--auth=admin:{c['service_argv_auth']}",
            ],
            "env": {
                "DB_PASSWORD": c["service_env"],
                "PLAIN_SETTING": c["service_env_plain_name"],
                "DB_URL": f"postgresql://app:{c['service_env_url']}@db.internal/app",
            },
            "port": port,
        },
        "health_url": f"http://probe:{c['health_userinfo']}@127.0.0.1:{port}/health"
        f"?code={c['health_query_code']}",
        "health_timeout_seconds": 5,
        "smoke_tests": [
            {
                "name": "home",
                "type": "http",
                "url": f"http://smoke:{c['smoke_userinfo']}@127.0.0.1:{port}/"
                f"?access_token={c['smoke_query']}&key={c['smoke_query_key']}"
                f"&sig={c['smoke_query_sig']}",
                "headers": {
                    "Authorization": f"Bearer {c['smoke_authorization']}",
                    "X-Api-Key": c["smoke_api_key"],
                    "Cookie": f"session={c['smoke_cookie']}",
                    "X-Auth-Key": c["smoke_auth_key_header"],
                    "Ocp-Apim-Subscription-Key": c["smoke_subscription_key_header"],
                },
            },
            {
                "name": "cli",
                "type": "command",
                "argv": [
                    sys.executable,
                    "-c",
                    SMOKE_SCRIPT,
                    f"--token={c['smoke_argv_eq']}",
                    "--client-secret",
                    c["smoke_argv_sep"],
                ],
                "env": {"SMOKE_DSN": c["smoke_env"], "API_TOKEN": c["smoke_env_secret_name"]},
            },
        ],
    }


def docker_service(c: Canaries) -> dict[str, Any]:
    return {
        "driver": "docker",
        "config": {
            "image": "redis",
            "env": {"REDIS_PASSWORD": c["docker_env"]},
            "command": ["redis-server", "--requirepass", c["docker_argv"]],
            "docker_host": f"tcp://ops:{c['docker_host_userinfo']}@127.0.0.1:2376",
        },
    }


async def _put(client: httpx.AsyncClient, admin: IssuedToken, path: str, body: Any) -> None:
    response = await client.put(path, json=body, headers=admin.headers)
    assert response.status_code in (200, 201), response.text


@pytest.fixture
async def staging(
    context: AppContext, client: httpx.AsyncClient, canaries: Canaries
) -> AsyncIterator[IssuedToken]:
    admin = await issue_token(context, Role.ADMIN)
    await _put(client, admin, "/v1/environments/staging", {"description": "canaries"})
    await _put(
        client,
        admin,
        "/v1/environments/staging/services/backend",
        backend_service(free_port(), canaries),
    )
    await _put(client, admin, "/v1/environments/staging/services/cache", docker_service(canaries))
    yield admin
    deleted = await client.delete("/v1/environments/staging/services/cache", headers=admin.headers)
    assert deleted.status_code == 204, deleted.text  # never deployed: nothing to stop
    await stop_services(context)


def _fill(path: str, values: dict[str, list[str]]) -> list[str]:
    """Every concrete path of a route template, from the resources the test created."""
    paths = [path]
    for param in re.findall(r"\{(\w+)(?::\w+)?\}", path):
        if param not in values:
            pytest.fail(f"the canary test has no value for {{{param}}} of {path}: add one")
        paths = [p.replace(f"{{{param}}}", v) for p in paths for v in values[param]]
    return paths


async def _read_everything(
    app: FastAPI, client: httpx.AsyncClient, token: IssuedToken, values: dict[str, list[str]]
) -> dict[str, httpx.Response]:
    seen: dict[str, httpx.Response] = {}
    for route in api_routes(app):
        if "GET" not in (route.methods or set()):
            continue
        for path in _fill(route.path, values):
            if token.role == Role.ADMIN and path.startswith("/v1/environments"):
                continue  # admins read service configurations as written: they edit them
            response = await client.get(path, headers=token.headers, timeout=60)
            assert response.status_code < 500, (path, response.text)
            seen[path] = response
    if token.role != Role.ADMIN:  # the plan, with the configuration admins wrote
        seen["dry run"] = await client.post(
            "/v1/deployments",
            json={"environment": "staging", "service": "backend", "version": "9", "dry_run": True},
            headers=token.headers,
        )
    if token.role == Role.OPERATOR:  # the health check's plan probes the health URLs
        seen["health-check dry run"] = await client.post(
            "/v1/health-checks", json={"dry_run": True}, headers=token.headers
        )
        assert seen["health-check dry run"].status_code == 200
    return seen


@pytest.mark.usefixtures("worker")
async def test_no_canary_reaches_a_reader_or_a_log(
    app: FastAPI,
    context: AppContext,
    client: httpx.AsyncClient,
    staging: IssuedToken,
    canaries: Canaries,
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A setting of the worker: the programs it starts must not inherit it.
    monkeypatch.setenv("FORMULA_OPS_TEST_CANARY", canaries["worker_setting"])
    admin = staging
    deployer = await issue_token(context, Role.DEPLOYER)
    body = {"environment": "staging", "service": "backend"}
    good = await client.post(
        "/v1/deployments",
        json={**body, "version": "1.0.0"},
        headers={**deployer.headers, **WAIT},
        timeout=120,
    )
    assert good.status_code == 201, good.text
    assert good.json()["status"] == "success", good.json()["failure"]
    broken = await client.post(
        "/v1/deployments",
        json={**body, "version": "1.1.0-broken"},
        headers={**deployer.headers, **WAIT},
        timeout=120,
    )
    assert broken.status_code == 201, broken.text
    assert broken.json()["status"] == "rolled_back", broken.json()
    operator = await issue_token(context, Role.OPERATOR)
    check = await client.post(
        "/v1/health-checks", headers={**operator.headers, **WAIT}, timeout=120
    )
    assert check.status_code == 201, check.text
    probed = [s for s in check.json()["steps"] if s["name"] == "service staging/backend"]
    assert [s["status"] for s in probed] == ["success"], check.json()["steps"]

    # The canaries were really used: the service and the smoke command got them.
    async with context.sessionmaker() as session:
        params = list(await session.scalars(select(Step.params)))
    assert canaries["smoke_env"] in str(params)
    as_admin = await client.get("/v1/environments/staging/services/backend", headers=admin.headers)
    assert canaries["service_env"] in as_admin.text  # admins read what they configured
    assert canaries["smoke_authorization"] in as_admin.text

    # A webhook with a credential header and a token in its URL, to a receiver that echoes
    # every request header back (into the delivery log, unless scrubbed).
    echo = EchoReceiver()
    runner = await start_receiver(echo)
    try:
        hook = await client.post(
            "/v1/webhooks",
            json={
                "url": f"{echo.url}?token={canaries['webhook_query']}",
                "headers": {"X-Team-Credential": canaries["webhook_header"]},
            },
            headers=operator.headers,
        )
        assert hook.status_code == 201, hook.text
        tested = await client.post(
            f"/v1/webhooks/{hook.json()['id']}/test", headers=operator.headers
        )
        assert tested.status_code == 200, tested.text
    finally:
        await runner.cleanup()
    assert echo.received[0].headers["X-Team-Credential"] == canaries["webhook_header"]

    # A component behind the service, an incident on it (listing its deployments, the
    # broken one among them) and a maintenance window over it.
    component = await client.post(
        "/v1/components",
        json={"name": "Canary API", "services": ["staging/backend"]},
        headers=operator.headers,
    )
    assert component.status_code == 201, component.text
    incident = await client.post(
        "/v1/incidents",
        json={
            "title": "Canary incident",
            "severity": "P2",
            "components": [{"component_id": component.json()["id"]}],
            "message": "We are investigating.",
        },
        headers=operator.headers,
    )
    assert incident.status_code == 201, incident.text
    assert incident.json()["recent_deployments"], incident.json()
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    window = await client.post(
        "/v1/maintenances",
        json={
            "title": "Canary window",
            "scheduled_for": start.isoformat(),
            "scheduled_until": (start + dt.timedelta(hours=1)).isoformat(),
            "components": [component.json()["id"]],
            "environments": ["staging"],
        },
        headers=operator.headers,
    )
    assert window.status_code == 201, window.text

    # An environment whose database URL carries a password, and a backup of it (refused
    # or failed: nothing listens there): its URL, errors and events keep no password.
    await _put(
        client,
        admin,
        "/v1/environments/vault",
        {
            "database_url": f"postgresql://app:{canaries['database_password']}@127.0.0.1:9/app",
            "backup_smoke_queries": ["SELECT 1"],
            # A Docker host's TLS client key and the application Redis's password.
            "docker_hosts": [
                {
                    "name": "vault-engine",
                    "url": f"ssh://{canaries['docker_ssh_user']}@127.0.0.1:9",
                },
                {
                    "name": "vault-tls",
                    "url": "tcp://10.0.0.9:2376",
                    "tls": {
                        "ca_cert": PEM_CERT,
                        "client_cert": PEM_CERT,
                        "client_key": "-----BEGIN PRIVATE KEY-----\n"
                        f"{canaries['docker_client_key']}\n-----END PRIVATE KEY-----\n",
                    },
                },
            ],
            "redis_url": f"redis://app:{canaries['redis_password']}@127.0.0.1:9/0",
        },
    )
    backup = await client.post(
        "/v1/backups",
        json={"environment": "vault"},
        headers={**operator.headers, "Idempotency-Key": "canary-backup", "Prefer": "wait=30"},
        timeout=60,
    )
    assert backup.status_code in (201, 409), backup.text

    # A runbook reading that Redis (refused: nothing listens), and a schedule of it.
    cache = await client.post(
        "/v1/runbooks/cache-performance/runs",
        json={"parameters": {"environment": "vault"}},
        headers={**operator.headers, "Prefer": "wait=30"},
        timeout=60,
    )
    assert cache.status_code in (200, 201, 202), cache.text
    schedule = await client.post(
        "/v1/schedules",
        json={
            "name": "vault-cache",
            "runbook": "cache-performance",
            "parameters": {"environment": "vault"},
            "cron": "0 4 * * *",
            "timezone": "UTC",
        },
        headers=operator.headers,
    )
    assert schedule.status_code == 201, schedule.text

    tokens = {role: await issue_token(context, role) for role in Role}
    runs = [good.json()["id"], broken.json()["id"], check.json()["id"], cache.json()["id"]]
    values = {
        "name": ["staging", "error_rate", "vault", "cache-performance"],
        "schedule_id": [schedule.json()["id"]],
        "backup_id": [backup.json()["id"]] if backup.status_code == 201 else runs[:1],
        "component_id": [component.json()["id"]],
        "incident_id": [incident.json()["id"]],
        "maintenance_id": [window.json()["id"]],
        "service_name": ["backend", "cache"],
        "deployment_id": runs[:2],
        "run_id": runs,
        "restore_id": runs[:1],  # not a restore: its 404 must not leak either
        "token_id": [t.id for t in tokens.values()],
        "webhook_id": [hook.json()["id"]],
        "delivery_id": [tested.json()["delivery"]["id"]],
    }
    leaks: list[tuple[str, str, list[str]]] = []
    for role in (Role.VIEWER, Role.DEPLOYER, Role.OPERATOR, Role.ADMIN):
        seen = await _read_everything(app, client, tokens[role], values)
        for path, response in seen.items():
            if found := canaries.found_in(response.text):
                leaks.append((role.value, path, found))
        if role == Role.VIEWER:  # the reads showed real content
            service = seen["/v1/environments/staging/services/backend"]
            assert service.status_code == 200
            assert "[redacted]" in service.text
            evidence = seen[f"/v1/deployments/{runs[1]}/evidence"]
            assert evidence.status_code == 200
            assert "smoke backend: cli" in evidence.text
            assert "event: run.finished" in seen[f"/v1/runs/{runs[1]}/events"].text
            assert "service.create" in seen["/v1/audit-events"].text

    stored = await _stored_for_readers(context)
    logged = logs.getvalue()
    assert "app.requests" in logged  # the handler saw the service's records
    assert leaks == [], leaks
    assert canaries.found_in(stored) == []
    assert canaries.found_in(logged) == []
    _assert_private(context)


async def _stored_for_readers(context: AppContext) -> str:
    """What the database keeps for readers: the append-only audit trail, step output,
    run events, evidence, failure details, service health."""
    async with context.sessionmaker() as session:
        parts: list[Any] = [
            *(await session.scalars(select(AuditEvent.summary))),
            *(await session.execute(select(Step.output, Step.error, Step.result))),
            *(await session.scalars(select(RunEvent.data))),
            *(await session.execute(select(Deployment.evidence, Deployment.request))),
            *(await session.execute(select(Run.failure_detail, Run.result))),
            *(await session.scalars(select(Service.health_detail))),
            *(await session.execute(select(WebhookAttempt.response_excerpt, WebhookAttempt.error))),
        ]
    return "\n".join(map(str, parts))


def _assert_private(context: AppContext) -> None:
    """The process driver's records and service logs: 0700 directories, 0600 files."""
    root = context.settings.state_dir / "processes"
    paths = [root, *root.rglob("*")]
    assert len(paths) > 3
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (str(path), oct(mode))
