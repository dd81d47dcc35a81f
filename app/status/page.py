"""The HTML status page, rendered on the server with Jinja2 (autoescaped), no script.

Accessibility: landmarks (``header``, ``main``, ``footer``) and a skip link, one ``h1``
and a heading per section, each status written in words beside its symbol and colour,
times in ``<time datetime>``; every colour on the white background has a contrast of at
least 4.5:1 (``COLOURS``, checked by tests/status/test_page.py).
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import TYPE_CHECKING, Any

from app.status import presenters
from app.status.presenters import PageInfo
from app.status.service import HISTORY_DAYS, IncidentRow, MaintenanceRow, Snapshot, UpdateRow

if TYPE_CHECKING:
    from jinja2 import Environment

BACKGROUND = "#ffffff"
COLOURS: dict[str, Any] = {
    "text": "#1f2328",
    "muted": "#59636e",
    "link": "#0969da",
    "status": {
        # component statuses
        "operational": "#1a7f37",
        "degraded_performance": "#9a6700",
        "partial_outage": "#bc4c00",
        "major_outage": "#cf222e",
        "under_maintenance": "#0969da",
        # page indicators and incident impacts
        "none": "#1a7f37",
        "minor": "#9a6700",
        "major": "#bc4c00",
        "critical": "#cf222e",
        "maintenance": "#0969da",
        "impact-none": "#59636e",
    },
}
COMPONENT_LABELS = {
    "operational": "Operational",
    "degraded_performance": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
    "under_maintenance": "Under maintenance",
}
SYMBOLS = {
    "operational": "✓",
    "none": "✓",
    "degraded_performance": "▲",
    "minor": "▲",
    "partial_outage": "◆",
    "major": "◆",
    "major_outage": "✕",
    "critical": "✕",
    "under_maintenance": "⚙",
    "maintenance": "⚙",
}
IMPACT_LABELS = {
    "none": "No impact",
    "minor": "Minor impact",
    "major": "Major impact",
    "critical": "Critical impact",
}
STATUS_LABELS = {
    "investigating": "Investigating",
    "identified": "Identified",
    "monitoring": "Monitoring",
    "resolved": "Resolved",
    "postmortem": "Postmortem",
    "scheduled": "Scheduled",
    "in_progress": "In progress",
    "verifying": "Verifying",
    "completed": "Completed",
}


@cache
def _environment() -> Environment:
    """The page's template environment, made (and Jinja2 imported) when the first page is
    rendered, not when the API starts."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("app.status", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _label(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%d %b %Y, %H:%M UTC")


def _updates(rows: list[UpdateRow]) -> list[dict[str, str]]:
    return [
        {
            "status_label": STATUS_LABELS.get(u.status, u.status),
            "body": u.body,
            "at": presenters.iso(u.created_at),
            "label": _label(u.created_at),
        }
        for u in rows
    ]


def _names(snapshot: Snapshot, ids: list[str]) -> list[str]:
    return [snapshot.by_id[i].name for i in ids if i in snapshot.by_id]


def _incident(snapshot: Snapshot, row: IncidentRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "impact_class": row.impact if row.impact != "none" else "impact-none",
        "impact_label": IMPACT_LABELS.get(row.impact, row.impact),
        "status_label": STATUS_LABELS.get(row.status, row.status),
        "components": _names(snapshot, row.component_ids),
        "updates": _updates(row.updates),
        "started_at": presenters.iso(row.created_at),
        "started_label": _label(row.created_at),
    }


def _window(snapshot: Snapshot, row: MaintenanceRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "status_label": STATUS_LABELS.get(row.status, row.status),
        "scheduled_for": presenters.iso(row.scheduled_for),
        "scheduled_until": presenters.iso(row.scheduled_until),
        "for_label": _label(row.scheduled_for),
        "until_label": _label(row.scheduled_until),
        "components": _names(snapshot, row.component_ids),
        "updates": _updates(row.updates),
    }


def _groups(snapshot: Snapshot) -> list[dict[str, Any]]:
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for c in snapshot.components:
        groups.setdefault(c.group, []).append(
            {
                "name": c.name,
                "description": c.description,
                "status": c.status,
                "label": COMPONENT_LABELS.get(c.status, c.status),
                "symbol": SYMBOLS.get(c.status, ""),
            }
        )
    return [{"name": name, "components": items} for name, items in groups.items()]


def render_page(snapshot: Snapshot, info: PageInfo) -> str:
    """The page for ``snapshot``."""
    overall = presenters.status(snapshot)
    cutoff = snapshot.taken_at - dt.timedelta(days=HISTORY_DAYS)
    by_start = sorted(snapshot.maintenances, key=lambda m: (m.scheduled_for, m.id))
    return (
        _environment()
        .get_template("status.html")
        .render(
            page={
                "name": info.name,
                "updated_at": presenters.iso(snapshot.updated_at),
                "updated_label": _label(snapshot.updated_at),
            },
            overall={**overall, "symbol": SYMBOLS.get(overall["indicator"], "")},
            colours=COLOURS,
            api="/api/v2",
            incidents=[_incident(snapshot, r) for r in snapshot.incidents if r.unresolved],
            active=[_window(snapshot, m) for m in by_start if m.active],
            upcoming=[_window(snapshot, m) for m in by_start if m.upcoming],
            groups=_groups(snapshot),
            history=[
                _incident(snapshot, r)
                for r in snapshot.incidents
                if not r.unresolved and r.created_at >= cutoff
            ],
            history_days=HISTORY_DAYS,
        )
    )
