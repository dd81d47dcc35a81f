"""The claims other records hold on components' statuses, and the one function that
turns them into what readers see.

An incident claims the status it set each of its components to while it is open; a
maintenance window claims ``under_maintenance`` while it is in progress. A component's
``status`` is the worst of its ``manual_status`` and its claims (``worst_status``), so
ending an incident or a window (dropping its claims) restores exactly what remains.
Every change of a component's ``status`` writes ``component.status_changed`` in the
caller's transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.components import revision
from app.components.events import ComponentStatusChanged
from app.components.models import Component, ComponentStatusClaim
from app.components.vocabulary import worst_status
from app.core.db import insert_rows, utcnow
from app.core.paths import V1
from app.outbox.service import add_event

INCIDENT = "incident"
MAINTENANCE = "maintenance"


async def set_claims(
    session: AsyncSession,
    source_type: str,
    source_id: str,
    claims: Mapping[str, str],
    *,
    now: dt.datetime | None = None,
) -> list[Component]:
    """Replace what ``source_type``/``source_id`` claims (component id → status; empty:
    it claims nothing any more) and recompute the components concerned. Returns the
    components whose status changed."""
    held = set(
        (
            await session.scalars(
                select(ComponentStatusClaim.component_id).where(
                    ComponentStatusClaim.source_type == source_type,
                    ComponentStatusClaim.source_id == source_id,
                )
            )
        ).all()
    )
    concerned = held | set(claims)
    if not concerned:
        return []
    # Lock the components first, in one order, so two writers never deadlock. FOR NO KEY
    # UPDATE: a transaction inserting a row that references a component (an incident's or
    # a window's component) takes a key-share lock on it, which this does not block.
    await _locked(session, concerned)
    if held:
        await session.execute(
            delete(ComponentStatusClaim).where(
                ComponentStatusClaim.source_type == source_type,
                ComponentStatusClaim.source_id == source_id,
            )
        )
    moment = now or utcnow()
    if claims:
        await insert_rows(
            session,
            [
                ComponentStatusClaim(
                    component_id=component_id,
                    source_type=source_type,
                    source_id=source_id,
                    status=status,
                    created_at=moment,
                )
                for component_id, status in sorted(claims.items())
            ],
        )
    return await recompute(session, concerned, now=moment)


async def recompute(
    session: AsyncSession, component_ids: Iterable[str], *, now: dt.datetime | None = None
) -> list[Component]:
    """Set each component's ``status`` to the worst of its manual status and its claims;
    announce every change. Returns the components that changed."""
    ids = sorted(set(component_ids))
    if not ids:
        return []
    components = await _locked(session, ids)
    rows = (
        await session.execute(
            select(ComponentStatusClaim.component_id, ComponentStatusClaim.status).where(
                ComponentStatusClaim.component_id.in_(ids)
            )
        )
    ).all()
    claimed: dict[str, list[str]] = {}
    for component_id, status in rows:
        claimed.setdefault(component_id, []).append(status)
    moment = now or utcnow()
    changed = []
    for component in components:
        status = worst_status(component.manual_status, *claimed.get(component.id, []))
        if status == component.status:
            continue
        old = component.status
        component.status = status
        component.status_changed_at = moment
        component.updated_at = moment
        component.version += 1
        await add_event(session, "component.status_changed", status_changed(component, old))
        changed.append(component)
    if changed:
        await revision.bump(session)
    await session.flush()
    return changed


def status_changed(component: Component, old_status: str) -> dict[str, object]:
    """The data of ``component.status_changed`` for ``component`` as it is now."""
    return ComponentStatusChanged.model_validate(
        {
            "component_id": component.id,
            "name": component.name,
            "group": component.group_name,
            "showcase": component.showcase,
            "old_status": old_status,
            "new_status": component.status,
            "changed_at": component.status_changed_at,
            "component_created_at": component.created_at,
            "links": {"self": f"{V1}/components/{component.id}"},
        }
    ).model_dump(mode="json")


async def _locked(session: AsyncSession, ids: Iterable[str]) -> list[Component]:
    return list(
        (
            await session.scalars(
                select(Component)
                .where(Component.id.in_(sorted(set(ids))))
                .order_by(Component.id)
                .with_for_update(key_share=True)
                .execution_options(populate_existing=True)
            )
        ).all()
    )
