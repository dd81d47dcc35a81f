"""From an Alertmanager alert to what the incident needs: its id within the group, the
severity it calls for, the threshold it measures, the components it concerns.

Severity: the alert's threshold (``thresholds.service.for_alert``: its ``threshold``
label, else its ``alertname``) decides, at the level its measured value grades to (the
number in the value annotation, in the threshold's unit) or, without a gradable value,
at the level its ``severity`` label names (``critical``/``warning``). Without a threshold,
or at a level the threshold does not know, the ``severity`` label maps by itself:
``critical`` → P1, ``warning`` → P2, anything else → P3. P0 is reached only through a
threshold whose ``critical_severity`` is P0.

Components: a ``component`` label names one (by name, case-insensitively); otherwise
the ``service`` label (with the ``environment`` label when present) is matched against
each component's ``services`` (``environment/service``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.components.vocabulary import SEVERITY_COMPONENT_STATUS, worst_status
from app.thresholds import service as thresholds
from app.thresholds.models import Threshold

# The `severity` label's own mapping, used without a threshold.
LABEL_SEVERITY: dict[str, str] = {"critical": "P1", "warning": "P2"}
DEFAULT_SEVERITY = "P3"
LEVELS = ("critical", "warning")
# Alertmanager's "not ended": Go's zero time.
_ZERO_TIME_YEAR = 1


@dataclass(frozen=True)
class ComponentRef:
    """What matching needs of a component."""

    id: str
    name: str
    services: tuple[str, ...]


@dataclass(frozen=True)
class Assessment:
    severity: str
    threshold: str | None
    level: str | None  # critical | warning, when a threshold decided


def group_key_hash(group_key: str) -> str:
    return hashlib.sha256(group_key.encode()).hexdigest()


def fingerprint(given: str | None, labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of the alert; when a sender leaves it out, a stable one
    derived from the labels (which identify an alert in Alertmanager too)."""
    if given:
        return given
    text = "\x1f".join(f"{k}\x1e{v}" for k, v in sorted(labels.items()))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def moment(value: dt.datetime | None) -> dt.datetime | None:
    """A timestamp as stored: None for Go's zero time, UTC when the sender gave none."""
    if value is None or value.year <= _ZERO_TIME_YEAR:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def measured(annotations: Mapping[str, str], name: str) -> float | None:
    """The number in annotation ``name`` (``"7.2"``, ``"7.2 %"``, ``"1.2e3"``), or None."""
    raw = annotations.get(name)
    if raw is None:
        return None
    text = raw.strip().removesuffix("%").strip()
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def assess(
    known: Mapping[str, Threshold],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    *,
    value_annotation: str = "value",
) -> Assessment:
    """The severity an alert calls for, and the threshold that decided it."""
    alertname = labels.get("alertname", "")
    label = labels.get("severity", "").strip().casefold()
    threshold = thresholds.for_alert(known, alertname, labels)
    if threshold is not None:
        level: str | None = None
        value = measured(annotations, value_annotation)
        if value is not None:
            graded = thresholds.grade(threshold, value)
            level = graded if graded != "ok" else None
        if level is None and label in LEVELS:
            level = label
        if level in LEVELS:
            severity = thresholds.severity_for(
                threshold, "critical" if level == "critical" else "warning"
            )
            if severity is not None:
                return Assessment(severity=severity, threshold=threshold.name, level=level)
    return Assessment(
        severity=LABEL_SEVERITY.get(label, DEFAULT_SEVERITY),
        threshold=threshold.name if threshold is not None else None,
        level=None,
    )


def components_for(labels: Mapping[str, str], components: Iterable[ComponentRef]) -> list[str]:
    """Ids of the components an alert concerns (sorted; empty when none matches)."""
    named = labels.get("component", "").strip().casefold()
    if named:
        return sorted(c.id for c in components if c.name.casefold() == named)
    service = labels.get("service", "").strip()
    if not service:
        return []
    environment = labels.get("environment", "").strip()
    found = []
    for component in components:
        for entry in component.services:
            env, _, name = entry.partition("/")
            if name == service and (not environment or env == environment):
                found.append(component.id)
                break
    return sorted(found)


def component_statuses(alerts: Iterable[tuple[str, Iterable[str]]]) -> dict[str, str]:
    """Component id → the status the incident sets it to: the worst any alert (its
    severity, its components) calls for."""
    statuses: dict[str, str] = {}
    for severity, ids in alerts:
        status = SEVERITY_COMPONENT_STATUS[severity]
        for component_id in ids:
            statuses[component_id] = worst_status(statuses.get(component_id, "operational"), status)
    return statuses


def highest(severities: Iterable[str]) -> str:
    """The most severe of ``severities`` (P0 first)."""
    return min(severities, default=DEFAULT_SEVERITY)
