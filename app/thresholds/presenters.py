"""Threshold rows as clients see them."""

from __future__ import annotations

from app.core.paths import V1
from app.thresholds.models import Threshold
from app.thresholds.schemas import ThresholdOut


def location(name: str) -> str:
    return f"{V1}/thresholds/{name}"


def threshold_out(threshold: Threshold) -> ThresholdOut:
    return ThresholdOut(
        name=threshold.name,
        title=threshold.title,
        description=threshold.description,
        unit=threshold.unit,
        warning=threshold.warning,
        critical=threshold.critical,
        warning_severity=threshold.warning_severity,
        critical_severity=threshold.critical_severity,
        alert_names=list(threshold.alert_names),
        prometheus_query=threshold.prometheus_query,
        updated_by=threshold.updated_by,
        updated_at=threshold.updated_at,
        version=threshold.version,
        links={"self": location(threshold.name)},
    )
