"""The alerts table as a dedupe store: one row per group (``groupKey``) and fingerprint,
written with one upsert per batch, so a re-sent notification (Alertmanager repeats
them, and retries on 5xx) updates the rows it names and counts the receipt, never adds
a row, also when two copies arrive at once: the second waits on the rows the first
wrote (in fingerprint order) until it commits, then updates them, so two copies of a
notification are also handled one after the other."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.models import Alert
from app.components.models import Component
from app.core.ids import new_id

BATCH = 500  # rows per statement: well under SQLite's bound-parameter limit


@dataclass
class AlertRow:
    """One alert of a notification, as stored."""

    fingerprint: str
    status: str
    alertname: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    generator_url: str | None
    severity: str | None
    threshold: str | None
    components: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Previous:
    """What an alert's row said before this notification."""

    status: str
    severity: str | None
    starts_at: dt.datetime | None


@dataclass(frozen=True)
class Stored:
    """An alert's row after the upsert (its incident and window still the earlier ones)."""

    id: str
    received_count: int
    incident_id: str | None = None
    suppressed_by: str | None = None
    previous: Previous | None = None  # None: seen for the first time


async def lock_components(session: AsyncSession, component_ids: Iterable[str]) -> None:
    """Lock the components a notification may change, in one order, before anything else
    touches them: the incident's component rows (whose foreign keys share-lock them) and
    its status claims (which lock them for update) then never wait on each other across
    two notifications (PostgreSQL would end one of them as a deadlock)."""
    ids = sorted(set(component_ids))
    if ids:
        await session.execute(
            select(Component.id)
            .where(Component.id.in_(ids))
            .order_by(Component.id)
            .with_for_update()
        )


def _upsert_statement(dialect: Any) -> Any:
    statement = dialect.insert(Alert)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["group_key_hash", "fingerprint"],
        set_={
            "receiver": excluded.receiver,
            "alertname": excluded.alertname,
            "status": excluded.status,
            "labels": excluded.labels,
            "annotations": excluded.annotations,
            "starts_at": excluded.starts_at,
            "ends_at": excluded.ends_at,
            "generator_url": excluded.generator_url,
            "severity": excluded.severity,
            "threshold": excluded.threshold,
            "received_count": Alert.received_count + 1,
            "updated_at": excluded.updated_at,
        },
    ).returning(
        Alert.fingerprint,
        Alert.id,
        Alert.received_count,
        Alert.incident_id,
        Alert.suppressed_by,
        sort_by_parameter_order=True,
    )


# Compiled once per dialect (the rows travel as parameters, in batches).
_UPSERT = {"postgresql": _upsert_statement(postgresql), "sqlite": _upsert_statement(sqlite)}


async def upsert(
    session: AsyncSession,
    *,
    group_key: str,
    group_key_hash: str,
    receiver: str,
    rows: Sequence[AlertRow],
    now: dt.datetime,
) -> dict[str, Stored]:
    """Insert the alerts not seen in this group, update the others (``received_count``
    + 1); returns each fingerprint's row as stored (``received_count`` 1: new), with what
    it said before (read under the row's lock, taken in the upsert's order)."""
    statement = _UPSERT[session.get_bind().dialect.name]
    stored: dict[str, Stored] = {}
    ordered = sorted(rows, key=lambda r: r.fingerprint)  # one lock order for every writer
    for start in range(0, len(ordered), BATCH):
        earlier = await session.execute(
            select(Alert.fingerprint, Alert.status, Alert.severity, Alert.starts_at)
            .where(
                Alert.group_key_hash == group_key_hash,
                Alert.fingerprint.in_([r.fingerprint for r in ordered[start : start + BATCH]]),
            )
            .order_by(Alert.fingerprint)
            .with_for_update()
        )
        previous = {
            fingerprint: Previous(status, severity, _utc(starts_at))
            for fingerprint, status, severity, starts_at in earlier.all()
        }
        values: list[dict[str, Any]] = [
            {
                "id": new_id(),
                "group_key_hash": group_key_hash,
                "group_key": group_key,
                "fingerprint": row.fingerprint,
                "receiver": receiver,
                "alertname": row.alertname[:200],
                "status": row.status,
                "labels": row.labels,
                "annotations": row.annotations,
                "starts_at": row.starts_at,
                "ends_at": row.ends_at,
                "generator_url": row.generator_url,
                "severity": row.severity,
                "threshold": row.threshold,
                "incident_id": None,
                "suppressed_by": None,
                "received_count": 1,
                "created_at": now,
                "updated_at": now,
            }
            for row in ordered[start : start + BATCH]
        ]
        result = await session.execute(statement, values)
        for fingerprint, row_id, count, incident_id, suppressed_by in result.all():
            stored[fingerprint] = Stored(
                row_id, count, incident_id, suppressed_by, previous.get(fingerprint)
            )
    return stored


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


async def link_incident(
    session: AsyncSession,
    rows: Sequence[Stored],
    incident_id: str,
    held_by: str | None = None,
) -> None:
    """The alerts ``rows`` opened or updated ``incident_id``; ``held_by``: the window
    that holds back some of their components (None: no window); rows linked so already
    are left alone."""
    ids = [r.id for r in rows if r.incident_id != incident_id or r.suppressed_by != held_by]
    if ids:
        await session.execute(
            update(Alert)
            .where(Alert.id.in_(sorted(ids)))
            .values(incident_id=incident_id, suppressed_by=held_by)
        )


async def suppress(session: AsyncSession, rows: Sequence[Stored], maintenance_id: str) -> None:
    """The alerts ``rows`` were held back by the maintenance window ``maintenance_id``."""
    ids = [r.id for r in rows if r.suppressed_by != maintenance_id]
    if ids:
        await session.execute(
            update(Alert).where(Alert.id.in_(sorted(ids))).values(suppressed_by=maintenance_id)
        )


async def group(session: AsyncSession, group_key_hash: str) -> list[Alert]:
    """Every stored alert of a group, by fingerprint, as the database has it now."""
    return list(
        (
            await session.scalars(
                select(Alert)
                .where(Alert.group_key_hash == group_key_hash)
                .order_by(Alert.fingerprint)
                .execution_options(populate_existing=True)
            )
        ).all()
    )
