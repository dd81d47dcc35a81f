"""Reading and grading thresholds: the one place that says whether a measured value is
ok, a warning or critical, and which threshold an alert measures; and changing them
(admins, audited)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.core.db import UnitOfWork, utcnow
from app.core.errors import AppError, NotFound, PreconditionFailed, ValidationFailed
from app.thresholds.models import Threshold
from app.thresholds.schemas import SEVERITIES, ThresholdUpdate

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


# -- reading and changing through the API ---------------------------------------------

PLACEHOLDERS = frozenset({"service", "environment", "window"})
_PLACEHOLDER = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)?")


class ThresholdNotFound(NotFound):
    type = "/problems/threshold-not-found"
    title = "Threshold not found"


class AlertNameTaken(AppError):
    type = "/problems/alert-name-taken"
    title = "Another threshold lists this alert name"
    status = 409


def etag(threshold: Threshold) -> str:
    return f'"{threshold.name}.{threshold.version}"'


async def get(session: AsyncSession, name: str) -> Threshold:
    threshold = await session.scalar(
        select(Threshold).where(Threshold.name == name).execution_options(populate_existing=True)
    )
    if threshold is None:
        raise ThresholdNotFound(f"No threshold {name!r}")
    return threshold


async def list_page(
    session: AsyncSession, limit: int, after: str | None
) -> tuple[Sequence[Threshold], str | None]:
    """By name; ``after``: the last name of the previous page."""
    statement = select(Threshold).order_by(Threshold.name).limit(limit + 1)
    if after:
        statement = statement.where(Threshold.name > after)
    rows = list((await session.scalars(statement)).all())
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].name


def _invalid(field: str, message: str, code: str) -> ValidationFailed:
    return ValidationFailed(
        message, errors=[{"loc": ["body", field], "msg": message, "type": code}]
    )


def _check_levels(threshold: Threshold, warning: float | None, critical: float | None) -> None:
    if threshold.unit == "percent":
        for field, value in (("warning", warning), ("critical", critical)):
            if value is not None and value > 100:
                raise _invalid(field, f"a percentage is at most 100, not {value}", "too_large")
    if warning is not None and critical is not None and not warning < critical:
        raise _invalid(
            "critical",
            f"warning ({warning}) must be below critical ({critical})",
            "warning_not_below_critical",
        )


def _check_severities(warning: str, critical: str) -> None:
    if SEVERITIES.index(critical) > SEVERITIES.index(warning):
        raise _invalid(
            "critical_severity",
            f"the critical level's severity ({critical}) must be at least as severe as the "
            f"warning level's ({warning}); P0 is the most severe",
            "severity_order",
        )


def _check_query(query: str) -> None:
    unknown = sorted({m.group(1) or "$" for m in _PLACEHOLDER.finditer(query)} - PLACEHOLDERS)
    if unknown:
        raise _invalid(
            "prometheus_query",
            "unknown placeholder(s): "
            + ", ".join(f"${name}" if name != "$" else "a bare $" for name in unknown)
            + "; only $service, $environment and $window are replaced",
            "unknown_placeholder",
        )


async def _check_alert_names(session: AsyncSession, name: str, alert_names: list[str]) -> None:
    wanted = {a.casefold(): a for a in alert_names}
    for other in (await session.scalars(select(Threshold).where(Threshold.name != name))).all():
        taken = sorted(wanted[a.casefold()] for a in other.alert_names if a.casefold() in wanted)
        if taken:
            raise AlertNameTaken(
                f"The threshold {other.name!r} lists {', '.join(taken)}; an alert measures "
                "one quantity: remove it there first"
            )


async def update(
    uow: UnitOfWork,
    principal: Principal,
    name: str,
    body: ThresholdUpdate,
    if_match: str | None,
) -> Threshold:
    """Change the fields given; the result is checked as a whole (levels in order,
    severities in order, alert names free, placeholders known)."""
    session = uow.session
    threshold = await session.scalar(
        select(Threshold)
        .where(Threshold.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if threshold is None:
        raise ThresholdNotFound(f"No threshold {name!r}")
    if if_match is not None and if_match.strip():
        tags = [tag.strip().removeprefix("W/") for tag in if_match.split(",")]
        if "*" not in tags and etag(threshold) not in tags:
            raise PreconditionFailed(
                f"The threshold changed: its ETag is {etag(threshold)}, If-Match gave "
                f"{if_match}; read it again and retry"
            )
    given = body.model_dump(exclude_unset=True)
    new = {field: given.get(field, getattr(threshold, field)) for field in _FIELDS}
    _check_levels(threshold, new["warning"], new["critical"])
    _check_severities(new["warning_severity"], new["critical_severity"])
    if new["prometheus_query"] is not None:
        _check_query(new["prometheus_query"])
    if "alert_names" in given:
        await _check_alert_names(session, name, new["alert_names"])
    changes: dict[str, Any] = {}
    for field in _FIELDS:
        old = getattr(threshold, field)
        if old != new[field]:
            changes[field] = {"from": old, "to": new[field]}
            setattr(threshold, field, new[field])
    if not changes:
        return threshold
    threshold.updated_by = principal.actor
    threshold.updated_at = utcnow()
    threshold.version += 1
    await session.flush()
    await audit_service.record(
        session,
        principal,
        action="threshold.update",
        resource_type="threshold",
        resource_id=name,
        summary={"changes": changes},
    )
    return threshold


_FIELDS = (
    "title",
    "description",
    "warning",
    "critical",
    "warning_severity",
    "critical_severity",
    "alert_names",
    "prometheus_query",
)
