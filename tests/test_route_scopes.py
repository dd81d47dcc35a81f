"""No route ships unprotected by accident, and no role gets more than it should."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import select

from app.api import DOCS_PATHS, PUBLIC_PATHS
from app.audit.refusals import ACTIONS
from app.auth.deps import ALERTS_SCOPE, ROLE_MARK, SCOPE_MARK
from app.auth.roles import Role
from app.core.context import AppContext
from app.core.routing import all_routes, api_routes
from app.core.settings import Settings
from app.main import create_app
from app.runs.models import Run
from tests.factories import app_with, issue_token


def scope_of(dependant: Dependant) -> tuple[Role, bool] | None:
    """The role a route requires, and whether its resources belong to an environment."""
    for sub in dependant.dependencies:
        role = getattr(sub.call, ROLE_MARK, None)
        if role is not None:
            return Role(role), bool(getattr(sub.call, "environment_scoped", False))
        found = scope_of(sub)
        if found is not None:
            return found
    return None


def token_scope_of(dependant: Dependant) -> str | None:
    """The capability a limited token needs to call a route (None: no limited token may)."""
    for sub in dependant.dependencies:
        if getattr(sub.call, ROLE_MARK, None) is not None:
            return getattr(sub.call, SCOPE_MARK, None)
        found = token_scope_of(sub)
        if found is not None:
            return found
    return None


def required_role(dependant: Dependant) -> Role | None:
    scope = scope_of(dependant)
    return scope[0] if scope else None


def unscoped_routes(app: FastAPI) -> list[str]:
    """Routes that are neither public nor guarded by a role dependency."""
    found = []
    for route in all_routes(app):
        path = getattr(route, "path", "")
        if path in PUBLIC_PATHS or path in DOCS_PATHS:
            continue
        if not isinstance(route, APIRoute) or required_role(route.dependant) is None:
            found.append(f"{sorted(getattr(route, 'methods', []) or [])} {path}")
    return found


def v1_routes(app: FastAPI) -> list[tuple[str, str, Role, bool]]:
    routes = []
    for route in api_routes(app):
        if route.path.startswith("/v1"):
            scope = scope_of(route.dependant)
            assert scope is not None
            routes.extend((method, route.path, *scope) for method in sorted(route.methods))
    return routes


def alerts_routes(app: FastAPI) -> set[tuple[str, str]]:
    """The routes a token limited to `alerts` may call."""
    return {
        (method, route.path)
        for route in api_routes(app)
        if token_scope_of(route.dependant) == ALERTS_SCOPE
        for method in route.methods
    }


class TestRouteScopeWalk:
    def test_every_route_is_scoped_or_public(self) -> None:
        assert unscoped_routes(create_app(Settings())) == []

    def test_an_unscoped_route_is_caught(self) -> None:
        app = create_app(Settings())

        @app.get("/v1/oops")
        async def oops() -> dict[str, str]:
            return {}

        assert unscoped_routes(app) == ["['GET'] /v1/oops"]

    def test_only_the_alertmanager_receiver_takes_an_alerts_token(self) -> None:
        assert alerts_routes(create_app(Settings())) == {("POST", "/v1/alerts/alertmanager")}

    def test_public_list_is_exactly_the_operational_routes(self) -> None:
        public_status = {
            "/status",
            *(
                f"/api/v2/{name}.json"
                for name in (
                    "summary",
                    "status",
                    "components",
                    "incidents",
                    "incidents/unresolved",
                    "scheduled-maintenances",
                    "scheduled-maintenances/upcoming",
                    "scheduled-maintenances/active",
                )
            ),
        }
        assert {"/health", "/ready", "/metrics"} | public_status == PUBLIC_PATHS

    def test_every_state_changing_route_names_its_audit_action(self) -> None:
        """A refused change is audited under its route's action (app/audit/refusals.py)."""
        changing = {
            route.operation_id
            for route in api_routes(create_app(Settings()))
            if route.methods - {"GET", "HEAD"}
        }
        assert changing == set(ACTIONS)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0000000000000000", path)


BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/tokens"): {"name": "matrix", "role": "viewer"},
    ("POST", "/v1/health-checks"): {"dry_run": True},
}


class TestRoleRouteMatrix:
    async def test_no_role_gets_a_2xx_below_its_rights(self, context: AppContext) -> None:
        # Every route is asked without a token once: more than the failed-authentication
        # limit of one address allows by default (requests without a token count).
        app = app_with(context, auth_failures_per_minute=10_000)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await self._check(client, context, app)

    async def _check(self, client: httpx.AsyncClient, context: AppContext, app: FastAPI) -> None:
        tokens = {role: await issue_token(context, role) for role in Role}
        restricted_admin = await issue_token(context, Role.ADMIN, environment="staging")
        # Limited to the Alertmanager receiver: refused everywhere else, whatever its role.
        alerts_admin = await issue_token(context, Role.ADMIN, scope="alerts")
        alerts_viewer = await issue_token(context, Role.VIEWER, scope="alerts")
        receiver = alerts_routes(app)
        checked = 0
        for method, path, required, environment_scoped in v1_routes(app):
            url = _concrete(path)
            body = BODIES.get((method, path))
            anonymous = await client.request(method, url, json=body)
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            for role, token in tokens.items():
                response = await client.request(method, url, json=body, headers=token.headers)
                if role.includes(required):
                    assert response.status_code not in (401, 403), (method, path, role)
                else:
                    assert response.status_code == 403, (method, path, role, response.text)
                checked += 1
            # global routes refuse a token restricted to one environment
            response = await client.request(
                method, url, json=body, headers=restricted_admin.headers
            )
            if environment_scoped:
                assert response.status_code not in (401, 403), (method, path)
            else:
                assert response.status_code == 403, (method, path)
            for limited in (alerts_admin, alerts_viewer):
                response = await client.request(method, url, json=body, headers=limited.headers)
                if (method, path) in receiver:
                    assert response.status_code not in (401, 403), (method, path, response.text)
                else:
                    assert response.status_code == 403, (method, path, response.text)
        assert checked >= 4 * 7


@pytest.mark.parametrize("role", list(Role))
def test_roles_include_their_lower_roles(role: Role) -> None:
    for other in Role:
        assert role.includes(other) == (other.rank <= role.rank)


PROCESS_SERVICE = {"driver": "process", "config": {"command": ["{python}", "-c", "pass"]}}


async def test_a_restricted_token_reaches_nothing_of_another_environment(
    context: AppContext, client: httpx.AsyncClient
) -> None:
    """A token restricted to staging, of every role, asks for a production deployment by
    id on every path that takes one (read, events, evidence, cancel, rollback), lists
    with a production filter, and asks for production's environment, services and pins:
    404 or an empty list, never production's data."""
    admin = await issue_token(context, Role.ADMIN)
    for env in ("staging", "production"):
        created = await client.put(f"/v1/environments/{env}", json={}, headers=admin.headers)
        assert created.status_code == 201, created.text
        service = await client.put(
            f"/v1/environments/{env}/services/api", json=PROCESS_SERVICE, headers=admin.headers
        )
        assert service.status_code == 201, service.text
    deployer = await issue_token(context, Role.DEPLOYER)
    queued = await client.post(
        "/v1/deployments",
        json={"environment": "production", "service": "api", "version": "1"},
        headers=deployer.headers,
    )
    assert queued.status_code == 202, queued.text
    run = queued.json()["id"]
    by_id = [
        ("GET", f"/v1/runs/{run}"),
        ("GET", f"/v1/runs/{run}/events"),
        ("GET", f"/v1/deployments/{run}"),
        ("GET", f"/v1/deployments/{run}/evidence"),
        ("POST", f"/v1/runs/{run}/cancel"),
        ("POST", f"/v1/deployments/{run}/cancel"),
        ("POST", f"/v1/deployments/{run}/rollback"),
        ("GET", "/v1/environments/production"),
        ("GET", "/v1/environments/production/services"),
        ("GET", "/v1/environments/production/services/api"),
        ("GET", "/v1/environments/production/services/api/pins"),
        ("DELETE", "/v1/environments/production/services/api/pins/1"),
    ]
    lists = ["/v1/runs?environment=production", "/v1/deployments?environment=production"]
    for role in Role:
        token = await issue_token(context, role, environment="staging")
        for method, path in by_id:
            response = await client.request(method, path, headers=token.headers)
            assert response.status_code in (403, 404), (role, method, path, response.text)
        for path in [*lists, "/v1/runs", "/v1/deployments", "/v1/environments"]:
            response = await client.get(path, headers=token.headers)
            assert response.status_code == 200, (role, path, response.text)
            assert run not in response.text, (role, path)
            assert "production" not in response.text, (role, path)
    async with context.sessionmaker() as session:
        status = await session.scalar(select(Run.status).where(Run.id == run))
    assert status == "queued"  # nothing a restricted token did reached it
