"""Router assembly: the versioned API under ``/v1`` and the public routes beside it;
:func:`build_api` adds the routes whose types come from the registry (a service's body,
by driver).

Each domain router carries its whole path prefix (``APIRouter(prefix=f"{V1}/tokens")``),
so a route's own ``path`` is its full template (metrics label requests by it). Public
routes are listed in :data:`PUBLIC_PATHS` and nowhere else.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.alerts.router import router as alerts_router
from app.audit.router import router as audit_router
from app.backups.restore_router import router as restores_router
from app.backups.router import router as backups_router
from app.components.router import router as components_router
from app.core.registry import Registry
from app.deployments.router import router as deployments_router
from app.drivers.base import DRIVERS
from app.environments.router import build_router as environments_router
from app.health_checks.router import router as health_checks_router
from app.incidents.router import router as incidents_router
from app.maintenances.router import router as maintenances_router
from app.ops.router import router as ops_router
from app.runbooks.approvals_router import router as approvals_router
from app.runbooks.router import router as runbooks_router
from app.runs.router import router as runs_router
from app.schedules.router import router as schedules_router
from app.status.router import PUBLIC_PATHS as STATUS_PATHS
from app.status.router import router as status_router
from app.thresholds.router import router as thresholds_router
from app.tokens.router import router as tokens_router
from app.webhooks.router import deliveries_router as webhook_deliveries_router
from app.webhooks.router import router as webhooks_router


def build_api(registry: Registry) -> APIRouter:
    """The ``/v1`` routes for what ``registry`` holds."""
    v1 = APIRouter()
    v1.include_router(tokens_router)
    v1.include_router(audit_router)
    v1.include_router(runs_router)
    v1.include_router(approvals_router)
    v1.include_router(health_checks_router)
    v1.include_router(environments_router(registry[DRIVERS]))
    v1.include_router(deployments_router)
    v1.include_router(webhooks_router)
    v1.include_router(webhook_deliveries_router)
    v1.include_router(components_router)
    v1.include_router(thresholds_router)
    v1.include_router(alerts_router)
    v1.include_router(incidents_router)
    v1.include_router(maintenances_router)
    v1.include_router(backups_router)
    v1.include_router(restores_router)
    v1.include_router(runbooks_router)
    v1.include_router(schedules_router)
    return v1


public = APIRouter()
public.include_router(ops_router)
public.include_router(status_router)

# Routes without a scope dependency; tests/test_route_scopes.py holds every other route
# to having one.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"}) | STATUS_PATHS
DOCS_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect"})
