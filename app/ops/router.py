"""``/health``, ``/ready`` and ``/metrics``: public unless metrics are made private."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from app import __version__
from app.audit.sealer import oldest_unsealed_age
from app.auth import service as auth_service
from app.auth.deps import request_info
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.auth.roles import Role
from app.core.deps import ContextDep, SessionDep
from app.core.errors import ServiceUnavailable, problem_responses
from app.ops.schemas import DependencyCheck, Health, Readiness
from app.runs import service as run_service

router = APIRouter(tags=["operations"])


class NotReady(ServiceUnavailable):
    type = "/problems/not-ready"
    title = "Not ready"


@router.get("/health", operation_id="getHealth", summary="Liveness")
async def health() -> Health:
    """Answers as long as the process serves requests; checks no dependency."""
    return Health(version=__version__)


@router.get(
    "/ready",
    operation_id="getReadiness",
    summary="Readiness",
    response_model_exclude_none=True,
    responses=problem_responses(NotReady),
)
async def ready(context: ContextDep) -> Readiness:
    """Checks the database and Redis; 503 names the ones that are down."""
    database, redis = await asyncio.gather(context.check_database(), context.check_redis())
    checks = {
        "database": DependencyCheck.model_validate(database),
        "redis": DependencyCheck.model_validate(redis),
    }
    down = [name for name, check in checks.items() if check.status != "ok"]
    if down:
        raise NotReady(
            f"unavailable: {', '.join(down)}",
            extra={"checks": {k: v.model_dump(exclude_none=True) for k, v in checks.items()}},
            headers={"Retry-After": "5"},
        )
    return Readiness(checks=checks)


@router.get(
    "/metrics",
    operation_id="getMetrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}}},
        **problem_responses(Unauthenticated, Forbidden, TooManyRequests),
    },
)
async def metrics(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """Public by default; with `FORMULA_OPS_METRICS_PUBLIC=false` it needs a viewer token."""
    if not context.settings.metrics_public:
        info = request_info(request)
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        principal = await auth_service.authenticate(
            context, credentials.strip() if scheme.lower() == "bearer" else None, info
        )
        await auth_service.require(context, principal, Role.VIEWER, info)
    # Read once here, by the process that answers (a source that fails is left out).
    await context.metrics.refresh(
        run_service.count_by_kind_and_status(session),
        oldest_unsealed_age(context.engine),
        context.redis,
        context.settings.queue_name,
        context.settings.ready_timeout_seconds,
    )
    return Response(context.metrics.render(), media_type="text/plain; version=0.0.4")
