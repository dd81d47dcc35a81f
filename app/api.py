"""Router assembly: the versioned API under ``/v1`` and the public routes beside it.

Each domain router carries its whole path prefix (``APIRouter(prefix=f"{V1}/tokens")``),
so a route's own ``path`` is its full template (metrics label requests by it). Public
routes are listed in :data:`PUBLIC_PATHS` and nowhere else.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from app.audit.router import router as audit_router
from app.ops.router import router as ops_router
from app.tokens.router import router as tokens_router

v1 = APIRouter()
v1.include_router(tokens_router)
v1.include_router(audit_router)

public = APIRouter()
public.include_router(ops_router)

# Routes without a scope dependency; tests/test_route_scopes.py holds every other route
# to having one.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})
DOCS_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect"})


def all_routes(app: FastAPI) -> list[BaseRoute]:
    """Every route of ``app``, however its routers were included."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI versions that flatten included routers
        return list(app.routes)
    return [c.original_route for c in iter_route_contexts(app.routes)]


def api_routes(app: FastAPI) -> list[APIRoute]:
    return [route for route in all_routes(app) if isinstance(route, APIRoute)]
