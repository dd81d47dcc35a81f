"""Reading and grading thresholds: the one place that says whether a measured value is
ok, a warning or critical, and which threshold an alert measures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.thresholds.models import Threshold

Grade = Literal["ok", "warning", "critical"]


async def load(session: AsyncSession) -> dict[str, Threshold]:
    """Every threshold by name."""
    return {t.name: t for t in (await session.scalars(select(Threshold))).all()}


def grade(threshold: Threshold, value: float) -> Grade:
    """``critical`` above the critical level, ``warning`` above the warning level, else
    ``ok`` (a level that is null never triggers)."""
    if threshold.critical is not None and value > threshold.critical:
        return "critical"
    if threshold.warning is not None and value > threshold.warning:
        return "warning"
    return "ok"


def severity_for(threshold: Threshold, level: Grade) -> str | None:
    """The incident severity ``level`` of ``threshold`` opens (None for ``ok``)."""
    if level == "critical":
        return threshold.critical_severity
    if level == "warning":
        return threshold.warning_severity
    return None


def for_alert(
    thresholds: Mapping[str, Threshold], alertname: str, labels: Mapping[str, str]
) -> Threshold | None:
    """The threshold an alert measures: named by its ``threshold`` label, else the one
    listing its ``alertname`` (case-insensitive)."""
    named = labels.get("threshold")
    if named and named in thresholds:
        return thresholds[named]
    wanted = alertname.casefold()
    for threshold in thresholds.values():
        if any(name.casefold() == wanted for name in threshold.alert_names):
            return threshold
    return None
