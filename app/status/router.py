"""The public status, without a token: Statuspage's public API (v2) under ``/api/v2`` and
the HTML page at ``/status``.

Every answer comes from the per-process cache (:mod:`app.status.cache`), carries an
``ETag`` (a hash of the body) and ``Cache-Control``, and is ``304 Not Modified`` when the
client's ``If-None-Match`` names it. CORS for these paths: :mod:`app.status.cors`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from app.core.deps import ContextDep, SessionDep
from app.status.cache import Render, StatusCache
from app.status.page import render_page
from app.status.presenters import PageInfo
from app.status.schemas import (
    ComponentsDocument,
    IncidentsDocument,
    MaintenancesDocument,
    StatusDocument,
    SummaryDocument,
)

API = "/api/v2"
PAGE = "/status"

router = APIRouter(tags=["status"])


def _cache(request: Request) -> StatusCache:
    cache: StatusCache | None = getattr(request.app.state, "status_cache", None)
    if cache is None:
        cache = request.app.state.status_cache = StatusCache()
    return cache


def page_info(request: Request, context: ContextDep) -> PageInfo:
    settings = context.settings.status
    url = settings.page_url or str(request.base_url).rstrip("/") + PAGE
    return PageInfo(name=settings.page_name, url=url)


def matches(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 §13.1.2)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


async def _serve(
    request: Request,
    context: ContextDep,
    session: SessionDep,
    name: str,
    media_type: str = "application/json",
    render: Render | None = None,
) -> Response:
    body = await _cache(request).body(session, page_info(request, context), name, render)
    headers = {
        "ETag": body.etag,
        "Cache-Control": f"public, max-age={context.settings.status.max_age_seconds}",
    }
    if matches(request.headers.get("if-none-match"), body.etag):
        return Response(status_code=304, headers=headers)
    return Response(body.content, media_type=media_type, headers=headers)


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
async def summary(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """The page, its overall status, every public component, the unresolved incidents
    and the upcoming and in-progress maintenance windows."""
    return await _serve(request, context, session, "summary")


@router.get(
    f"{API}/status.json", operation_id="getStatusIndicator", **_doc(StatusDocument, "Status")
)
async def status(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """The overall status: `indicator` (`none`, `minor`, `major`, `critical`,
    `maintenance`) and its description."""
    return await _serve(request, context, session, "status")


@router.get(
    f"{API}/components.json",
    operation_id="getStatusComponents",
    **_doc(ComponentsDocument, "Components"),
)
async def components(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """The public components, each group as a component of its own before its members."""
    return await _serve(request, context, session, "components")


@router.get(
    f"{API}/incidents.json",
    operation_id="getStatusIncidents",
    **_doc(IncidentsDocument, "Incidents"),
)
async def incidents(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """The 50 most recent incidents, resolved ones included, with their public updates."""
    return await _serve(request, context, session, "incidents")


@router.get(
    f"{API}/incidents/unresolved.json",
    operation_id="getStatusUnresolvedIncidents",
    **_doc(IncidentsDocument, "Unresolved incidents"),
)
async def unresolved(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """Incidents in `investigating`, `identified` or `monitoring`."""
    return await _serve(request, context, session, "incidents/unresolved")


@router.get(
    f"{API}/scheduled-maintenances.json",
    operation_id="getStatusMaintenances",
    **_doc(MaintenancesDocument, "Scheduled maintenances"),
)
async def maintenances(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """The 50 most recent maintenance windows (cancelled ones are not shown)."""
    return await _serve(request, context, session, "scheduled-maintenances")


@router.get(
    f"{API}/scheduled-maintenances/upcoming.json",
    operation_id="getStatusUpcomingMaintenances",
    **_doc(MaintenancesDocument, "Upcoming maintenances"),
)
async def upcoming(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """Windows in `scheduled`, soonest first."""
    return await _serve(request, context, session, "scheduled-maintenances/upcoming")


@router.get(
    f"{API}/scheduled-maintenances/active.json",
    operation_id="getStatusActiveMaintenances",
    **_doc(MaintenancesDocument, "Active maintenances"),
)
async def active(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """Windows in `in_progress` or `verifying`."""
    return await _serve(request, context, session, "scheduled-maintenances/active")


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
async def page(request: Request, context: ContextDep, session: SessionDep) -> Response:
    """The status page in HTML, rendered on the server (no script): the overall status,
    the components by group, the unresolved incidents with their public updates, the
    maintenance windows in progress and to come, and 90 days of incident history."""
    return await _serve(
        request, context, session, "page.html", "text/html; charset=utf-8", render_page
    )


PUBLIC_PATHS: frozenset[str] = frozenset(
    route.path
    for route in router.routes
    if hasattr(route, "path")  # every route of this router is public
)
