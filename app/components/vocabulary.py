"""The status page's vocabularies, Atlassian Statuspage's own words: a component's
status, an incident's status and impact, the page's indicator; and how they rank.

Every domain that shows or changes a status (components, incidents, maintenances, the
public status, the ``statuspage`` webhook feed) uses these, so the words cannot drift.
"""

from __future__ import annotations

from typing import Literal, get_args

ComponentStatus = Literal[
    "operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"
]
IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved", "postmortem"]
Impact = Literal["none", "minor", "major", "critical"]
Severity = Literal["P0", "P1", "P2", "P3"]
MaintenanceStatus = Literal["scheduled", "in_progress", "verifying", "completed"]
# Statuspage's page indicator: an impact, or `maintenance` while a component is under it.
StatusIndicator = Literal["none", "minor", "major", "critical", "maintenance"]

COMPONENT_STATUSES: tuple[str, ...] = get_args(ComponentStatus)
SEVERITIES: tuple[str, ...] = get_args(Severity)

STATUS_DESCRIPTIONS: dict[str, str] = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
    "maintenance": "Service Under Maintenance",
}
# What one component's status says about the page.
COMPONENT_INDICATORS: dict[str, StatusIndicator] = {
    "operational": "none",
    "degraded_performance": "minor",
    "partial_outage": "major",
    "major_outage": "critical",
    "under_maintenance": "maintenance",
}
# The impact a severity shows readers of the status page (the runbook's P0 to P3).
SEVERITY_IMPACT: dict[str, Impact] = {"P0": "critical", "P1": "major", "P2": "minor", "P3": "none"}

# Worst last: maintenance outranks nothing but "all operational".
INDICATOR_ORDER: tuple[StatusIndicator, ...] = ("none", "maintenance", "minor", "major", "critical")
# A component's statuses ranked the same way: the worst claim on a component wins.
COMPONENT_ORDER: tuple[str, ...] = (
    "operational",
    "under_maintenance",
    "degraded_performance",
    "partial_outage",
    "major_outage",
)
CLOSED_INCIDENT: frozenset[str] = frozenset({"resolved", "postmortem"})


def worst(*indicators: StatusIndicator) -> StatusIndicator:
    """The worst of ``indicators`` (``none`` for none)."""
    return max(indicators, key=INDICATOR_ORDER.index, default="none")


def worst_status(*statuses: str) -> str:
    """The worst of component ``statuses`` (``operational`` for none)."""
    return max(statuses, key=COMPONENT_ORDER.index, default="operational")


# The status an incident sets its components to by default, from its severity.
SEVERITY_COMPONENT_STATUS: dict[str, str] = {
    "P0": "major_outage",
    "P1": "partial_outage",
    "P2": "degraded_performance",
    "P3": "degraded_performance",
}
