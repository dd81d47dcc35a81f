"""A :class:`~app.status.service.Snapshot` as Statuspage's public documents (plain data,
serialized once per revision by :mod:`app.status.cache`), and the overall status.

Statuspage shows a component group as a component of its own (``group: true``, its
members' ids in ``components``; members name it in ``group_id``): a group's id here is
derived from its name, its status is the worst of its members', its position the first
of theirs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from app.components.vocabulary import (
    COMPONENT_INDICATORS,
    STATUS_DESCRIPTIONS,
    StatusIndicator,
    worst,
    worst_status,
)
from app.status.service import (
    RECENT,
    IncidentRow,
    MaintenanceRow,
    PublicComponentRow,
    Snapshot,
)

PAGE_ID = "formula-ops"
TIME_ZONE = "Etc/UTC"


@dataclass(frozen=True)
class PageInfo:
    name: str
    url: str  # the HTML page


def iso(moment: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds, as Statuspage writes its timestamps."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_or_none(moment: dt.datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def group_id(name: str) -> str:
    return "grp_" + hashlib.sha256(name.encode()).hexdigest()[:16]


def indicator(snapshot: Snapshot) -> StatusIndicator:
    """The page's indicator: the worst of the components' statuses and the unresolved
    incidents' impacts; ``maintenance`` while a window is in progress and nothing worse
    happens."""
    found: list[StatusIndicator] = [COMPONENT_INDICATORS[c.status] for c in snapshot.components]
    found += [i.impact for i in snapshot.incidents if i.unresolved]  # type: ignore[misc]
    if any(m.active for m in snapshot.maintenances):
        found.append("maintenance")
    return worst(*found)


def page(snapshot: Snapshot, info: PageInfo) -> dict[str, Any]:
    return {
        "id": PAGE_ID,
        "name": info.name,
        "url": info.url,
        "time_zone": TIME_ZONE,
        "updated_at": iso(snapshot.updated_at),
    }


def status(snapshot: Snapshot) -> dict[str, Any]:
    level = indicator(snapshot)
    return {"indicator": level, "description": STATUS_DESCRIPTIONS[level]}


def _component(row: PublicComponentRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "position": row.position,
        "description": row.description or None,
        "showcase": True,
        "start_date": None,
        "group_id": group_id(row.group) if row.group else None,
        "page_id": PAGE_ID,
        "group": False,
        "only_show_if_degraded": False,
    }


def components(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Every showcase component, and a group component before the members of each group."""
    out: list[dict[str, Any]] = []
    groups: dict[str, list[PublicComponentRow]] = {}
    for row in snapshot.components:
        if row.group:
            groups.setdefault(row.group, []).append(row)
    done: set[str] = set()
    for row in snapshot.components:
        if row.group and row.group not in done:
            done.add(row.group)
            members = groups[row.group]
            out.append(
                {
                    "id": group_id(row.group),
                    "name": row.group,
                    "status": worst_status(*(m.status for m in members)),
                    "created_at": iso(min(m.created_at for m in members)),
                    "updated_at": iso(max(m.updated_at for m in members)),
                    "position": members[0].position,
                    "description": None,
                    "showcase": True,
                    "start_date": None,
                    "group_id": None,
                    "page_id": PAGE_ID,
                    "group": True,
                    "only_show_if_degraded": False,
                    "components": [m.id for m in members],
                }
            )
        out.append(_component(row))
    return out


def _updates(owner_id: str, rows: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": u.id,
            "status": u.status,
            "body": u.body,
            "incident_id": owner_id,
            "created_at": iso(u.created_at),
            "updated_at": iso(u.created_at),
            "display_at": iso(u.created_at),
        }
        for u in rows
    ]


def _linked(snapshot: Snapshot, ids: list[str]) -> list[dict[str, Any]]:
    return [_component(snapshot.by_id[i]) for i in ids if i in snapshot.by_id]


def incident(snapshot: Snapshot, info: PageInfo, row: IncidentRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "monitoring_at": _iso_or_none(row.monitoring_at),
        "resolved_at": _iso_or_none(row.resolved_at),
        "impact": row.impact,
        "shortlink": f"{info.url}#incident-{row.id}",
        "started_at": iso(row.created_at),
        "page_id": PAGE_ID,
        "incident_updates": _updates(row.id, row.updates),
        "components": _linked(snapshot, row.component_ids),
    }


def maintenance(snapshot: Snapshot, info: PageInfo, row: MaintenanceRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "monitoring_at": None,
        "resolved_at": _iso_or_none(row.completed_at),
        "impact": "maintenance",
        "shortlink": f"{info.url}#maintenance-{row.id}",
        "started_at": iso(row.started_at or row.scheduled_for),
        "page_id": PAGE_ID,
        "incident_updates": _updates(row.id, row.updates),
        "components": _linked(snapshot, row.component_ids),
        "scheduled_for": iso(row.scheduled_for),
        "scheduled_until": iso(row.scheduled_until),
    }


def document(name: str, snapshot: Snapshot, info: PageInfo) -> dict[str, Any]:
    """The body of ``/api/v2/<name>.json``."""
    head = {"page": page(snapshot, info)}
    if name == "status":
        return {**head, "status": status(snapshot)}
    if name == "components":
        return {**head, "components": components(snapshot)}
    if name == "incidents":
        rows = snapshot.incidents[:RECENT]
        return {**head, "incidents": [incident(snapshot, info, r) for r in rows]}
    if name == "incidents/unresolved":
        rows = [r for r in snapshot.incidents if r.unresolved]
        return {**head, "incidents": [incident(snapshot, info, r) for r in rows]}
    if name.startswith("scheduled-maintenances"):
        windows = _maintenances(name, snapshot)
        return {**head, "scheduled_maintenances": [maintenance(snapshot, info, m) for m in windows]}
    if name == "summary":
        return {
            **head,
            "components": components(snapshot),
            "incidents": [incident(snapshot, info, r) for r in snapshot.incidents if r.unresolved],
            "scheduled_maintenances": [
                maintenance(snapshot, info, m)
                for m in _by_start(snapshot.maintenances)
                if m.active or m.upcoming
            ],
            "status": status(snapshot),
        }
    raise KeyError(name)


def _by_start(rows: list[MaintenanceRow]) -> list[MaintenanceRow]:
    return sorted(rows, key=lambda m: (m.scheduled_for, m.id))


def _maintenances(name: str, snapshot: Snapshot) -> list[MaintenanceRow]:
    if name == "scheduled-maintenances/upcoming":
        return [m for m in _by_start(snapshot.maintenances) if m.upcoming]
    if name == "scheduled-maintenances/active":
        return [m for m in _by_start(snapshot.maintenances) if m.active]
    return snapshot.maintenances[:RECENT]


DOCUMENTS: tuple[str, ...] = (
    "summary",
    "status",
    "components",
    "incidents",
    "incidents/unresolved",
    "scheduled-maintenances",
    "scheduled-maintenances/upcoming",
    "scheduled-maintenances/active",
)
