"""Looking at the application's routes, however its routers were included."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute


def all_routes(app: FastAPI) -> list[BaseRoute]:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI versions that flatten included routers
        return list(app.routes)
    return [c.original_route for c in iter_route_contexts(app.routes)]


def api_routes(app: FastAPI) -> list[APIRoute]:
    return [route for route in all_routes(app) if isinstance(route, APIRoute)]


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods of the path template ``path`` resolves to first (for a 405's
    ``Allow``): every route declared on that template, as the OpenAPI path item lists."""
    routes = api_routes(app)
    template = next((r.path for r in routes if r.path_regex.match(path)), None)
    methods: set[str] = set()
    for route in routes:
        if route.path == template:
            methods |= route.methods or set()
    return sorted(methods)
