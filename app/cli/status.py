"""``formula-ops status``: the public status (``GET /api/v2/summary.json``, no token
needed): the overall status, each component's, the unresolved incidents and the
maintenance windows in progress or to come.

Exit 0 when the status was read (whatever it says), 2 when it could not be.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from app.cli.client import connect
from app.cli.output import console, print_table, styled, utc

SUMMARY = "/api/v2/summary.json"
COMPONENT_STYLES = {
    "operational": "green",
    "degraded_performance": "yellow",
    "partial_outage": "dark_orange",
    "major_outage": "red",
    "under_maintenance": "cyan",
}
INDICATOR_STYLES = {
    "none": "green",
    "minor": "yellow",
    "major": "dark_orange",
    "critical": "red",
    "maintenance": "cyan",
}


def _components(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Each component (not the groups themselves) with its group's name."""
    groups = {c["id"]: c["name"] for c in summary["components"] if c.get("group")}
    return [
        (str(c["name"]), groups.get(c.get("group_id") or "", "-"), str(c["status"]))
        for c in summary["components"]
        if not c.get("group")
    ]


def status() -> None:
    """Print the public status: overall, components, incidents, maintenance.

    Reads GET /api/v2/summary.json (no token needed). One tab-separated line per
    component when the output is not a terminal."""
    with connect(public=True) as client:
        summary = client.get_json(SUMMARY)
    page = summary["status"]
    console.print(
        f"{escape(str(summary['page']['name']))}: "
        f"{styled(str(page['indicator']), INDICATOR_STYLES)} ({escape(str(page['description']))})"
    )
    print_table(
        ("component", "group", "status"),
        _components(summary),
        empty="No public components.",
        styles={2: COMPONENT_STYLES},
    )
    for incident in summary["incidents"]:
        updates = incident.get("incident_updates") or []
        latest = f": {escape(str(updates[0]['body']))}" if updates else ""
        console.print(
            f"Incident [bold]{escape(str(incident['name']))}[/bold] "
            f"({escape(str(incident['impact']))} impact, {escape(str(incident['status']))}, "
            f"since {utc(incident['started_at'])}){latest}"
        )
    for window in summary["scheduled_maintenances"]:
        console.print(
            f"Maintenance [bold]{escape(str(window['name']))}[/bold] "
            f"({escape(str(window['status']))}, {utc(window['scheduled_for'])} to "
            f"{utc(window['scheduled_until'])})"
        )
