"""The public status, without a token: Statuspage's public API (v2) under ``/api/v2`` and
the HTML page at ``/status``.

Every answer comes from the per-process cache (:mod:`app.status.cache`), carries an
``ETag`` (a hash of the body) and ``Cache-Control``, and is ``304 Not Modified`` when the
client's ``If-None-Match`` names it. A plain GET is answered the same way before it
reaches these routes (:mod:`app.status.asgi`); they answer the rest (a query string:
422; the database out of reach: 503).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from app.core.deps import ContextDep
from app.status.http import API, PAGE, answer, cache_of
from app.status.schemas import (
    ComponentsDocument,
    IncidentsDocument,
    MaintenancesDocument,
    StatusDocument,
    SummaryDocument,
)

router = APIRouter(tags=["status"])


async def _serve(request: Request, context: ContextDep) -> Response:
    result = await answer(
        context,
        cache_of(request.app),
        request.url.path,
        str(request.base_url),
        request.headers.get("if-none-match"),
    )
    return Response(result.content, status_code=result.status, headers=result.headers)


def _doc(model: type[Any], summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {
            200: {"model": model, "description": "The document (`ETag`, `Cache-Control`)."},
            304: {"description": "Not modified: `If-None-Match` names the current `ETag`."},
        },
        "response_class": Response,
    }


@router.get(
    f"{API}/summary.json", operation_id="getStatusSummary", **_doc(SummaryDocument, "Summary")
)
async def summary(request: Request, context: ContextDep) -> Response:
    """The page, its overall status, every public component, the unresolved incidents
    and the upcoming and in-progress maintenance windows."""
    return await _serve(request, context)


@router.get(
    f"{API}/status.json", operation_id="getStatusIndicator", **_doc(StatusDocument, "Status")
)
async def status(request: Request, context: ContextDep) -> Response:
    """The overall status: `indicator` (`none`, `minor`, `major`, `critical`,
    `maintenance`) and its description."""
    return await _serve(request, context)


@router.get(
    f"{API}/components.json",
    operation_id="getStatusComponents",
    **_doc(ComponentsDocument, "Components"),
)
async def components(request: Request, context: ContextDep) -> Response:
    """The public components, each group as a component of its own before its members."""
    return await _serve(request, context)


@router.get(
    f"{API}/incidents.json",
    operation_id="getStatusIncidents",
    **_doc(IncidentsDocument, "Incidents"),
)
async def incidents(request: Request, context: ContextDep) -> Response:
    """The 50 most recent incidents, resolved ones included, with their public updates."""
    return await _serve(request, context)


@router.get(
    f"{API}/incidents/unresolved.json",
    operation_id="getStatusUnresolvedIncidents",
    **_doc(IncidentsDocument, "Unresolved incidents"),
)
async def unresolved(request: Request, context: ContextDep) -> Response:
    """Incidents in `investigating`, `identified` or `monitoring`."""
    return await _serve(request, context)


@router.get(
    f"{API}/scheduled-maintenances.json",
    operation_id="getStatusMaintenances",
    **_doc(MaintenancesDocument, "Scheduled maintenances"),
)
async def maintenances(request: Request, context: ContextDep) -> Response:
    """The 50 most recent maintenance windows (cancelled ones are not shown)."""
    return await _serve(request, context)


@router.get(
    f"{API}/scheduled-maintenances/upcoming.json",
    operation_id="getStatusUpcomingMaintenances",
    **_doc(MaintenancesDocument, "Upcoming maintenances"),
)
async def upcoming(request: Request, context: ContextDep) -> Response:
    """Windows in `scheduled`, soonest first."""
    return await _serve(request, context)


@router.get(
    f"{API}/scheduled-maintenances/active.json",
    operation_id="getStatusActiveMaintenances",
    **_doc(MaintenancesDocument, "Active maintenances"),
)
async def active(request: Request, context: ContextDep) -> Response:
    """Windows in `in_progress` or `verifying`."""
    return await _serve(request, context)


@router.get(
    PAGE,
    operation_id="getStatusPage",
    summary="Status page",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}},
        304: {"description": "Not modified: `If-None-Match` names the current `ETag`."},
    },
)
async def page(request: Request, context: ContextDep) -> Response:
    """The status page in HTML, rendered on the server (no script): the overall status,
    the components by group, the unresolved incidents with their public updates, the
    maintenance windows in progress and to come, and 90 days of incident history."""
    return await _serve(request, context)


PUBLIC_PATHS: frozenset[str] = frozenset(
    route.path
    for route in router.routes
    if hasattr(route, "path")  # every route of this router is public
)
