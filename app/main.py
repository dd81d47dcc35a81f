"""``create_app(settings)``: the FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi

from app import __version__
from app.api import build_api, public
from app.audit.refusals import install_refusal_audit
from app.audit.sealer import start_sealer, stop_sealer
from app.bootstrap import build_context, build_registry
from app.core.context import AppContext
from app.core.deps import forbid_unknown_query
from app.core.errors import PROBLEM_MEDIA_TYPE, ConcurrentChange, Problem, install_error_handlers
from app.core.metrics import Metrics
from app.core.middleware import RequestContextMiddleware
from app.core.proxies import TrustedProxies
from app.core.registry import Registry
from app.core.settings import Settings, get_settings
from app.drivers.base import DRIVERS
from app.idempotency.errors import IdempotentReplay
from app.openapi_links import add_links
from app.outbox.catalog import EVENT_TYPES, openapi_webhooks
from app.runs.kinds import registered
from app.status.asgi import PublicStatus

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Formula Ops turns an operations runbook into a versioned REST API: every operation is
requested over HTTP, queued, executed step by step by workers, and recorded in an audit
database. Errors are RFC 9457 problem details (`application/problem+json`).
"""


def create_app(settings: Settings | None = None, *, context: AppContext | None = None) -> FastAPI:
    """Build the application. With ``context`` given, the caller owns (and closes) it."""
    settings = settings or (context.settings if context else get_settings())
    metrics = context.metrics if context is not None else Metrics()
    registry = context.registry if context is not None else build_registry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if context is not None:
            yield
            return
        owned = build_context(settings, metrics=metrics, registry=registry)
        app.state.context = owned
        # Sealing is one indexed read per interval when there is nothing to seal; an API
        # process seals too, so the trail stays sealed while no worker runs.
        sealer = start_sealer(owned.engine, metrics, interval=settings.audit_seal_interval_seconds)
        try:
            yield
        finally:
            await stop_sealer(sealer)
            await owned.aclose()

    app = FastAPI(
        title="Formula Ops",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        dependencies=[Depends(forbid_unknown_query)],
    )
    if context is not None:
        app.state.context = context

    install_error_handlers(app)
    install_refusal_audit(app)  # after the handlers it wraps
    app.add_exception_handler(IdempotentReplay, _replay)
    app.include_router(public)
    app.include_router(build_api(registry))
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        trusted_proxies=TrustedProxies.parse(settings.trusted_proxies),
    )
    # Outermost: the public status from its cache, and its CORS (app/status/asgi.py).
    app.add_middleware(PublicStatus)
    app.openapi = lambda: _openapi(app, registry)  # type: ignore[method-assign]
    return app


async def _replay(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdempotentReplay)
    return exc.response


def _openapi(app: FastAPI, registry: Registry) -> dict[str, Any]:
    """The OpenAPI document, with every error response described as a problem."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(_problem_schemas())
    problem_content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            if method in ("post", "put", "patch"):
                # A unique key taken by a concurrent request (errors._handle_integrity).
                conflict = responses.setdefault("409", {"description": ConcurrentChange.title})
                if ConcurrentChange.title not in conflict["description"]:
                    conflict["description"] += f"; {ConcurrentChange.title}"
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = problem_content
                    if int(code) == 422:
                        response["description"] = "Request validation failed"
            if "requestBody" in operation:
                responses.setdefault(
                    "413",
                    {"description": "Request body too large", "content": problem_content},
                )
            responses.setdefault(
                "500",
                {"description": "Internal server error", "content": problem_content},
            )
            responses.setdefault(
                "503",
                {
                    "description": "The database or Redis is busy or unreachable; nothing "
                    "was changed (`Retry-After`)",
                    "content": problem_content,
                },
            )
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    # What subscribers receive: one entry per registered event type.
    schema["webhooks"] = openapi_webhooks(registry[EVENT_TYPES], components)
    _closed_pattern_objects(components)
    _registered_names(components, registry)
    # Which value of an answer the next request takes (app/openapi_links.py).
    add_links(schema)
    app.openapi_schema = schema
    return schema


def _registered_names(components: dict[str, Any], registry: Registry) -> None:
    """What the registry holds, in the schemas: the drivers a service names, and which
    of the reserved run kinds this installation runs."""
    kinds = components.get("RunKind")
    if kinds is not None:
        runs = ", ".join(f"`{kind.value}`" for kind in registered(registry))
        kinds["description"] = (
            f"The kind of operation a run is. This installation runs {runs}; "
            "the other names are reserved for capabilities to come."
        )
    service = components.get("ServiceOut", {}).get("properties", {})
    if "driver" in service:
        kind = service["driver"].pop("type")
        service["driver"] = {
            "type": kind,
            "enum": list(registry[DRIVERS].names()),
            **service["driver"],
        }


def _closed_pattern_objects(node: Any) -> None:
    """A mapping whose keys must match a pattern is validated as such: say so in the
    schema too (pydantic leaves other keys open)."""
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _closed_pattern_objects(value)
    elif isinstance(node, list):
        for value in node:
            _closed_pattern_objects(value)


def _problem_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {"Problem": schema, **definitions}
