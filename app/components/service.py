"""Component rules: create, read, list (by group, position, name), change, delete.

A change is audited in its transaction and bumps the public status revision. The
status an operator sets is ``manual_status``; what readers see (``status``) is only
ever set by :func:`app.components.claims.recompute` (the worst of it and the claims),
which announces ``component.status_changed``: a change of the operator's status emits
that event exactly when what readers see changes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.auth.principal import Principal
from app.components import claims, revision
from app.components.models import Component, ComponentStatusClaim
from app.components.schemas import ComponentCreate, ComponentUpdate
from app.core.db import UnitOfWork, utcnow
from app.core.errors import AppError, NotFound, PreconditionFailed, ValidationFailed
from app.core.ids import new_id
from app.environments.models import Service


class ComponentNotFound(NotFound):
    type = "/problems/component-not-found"
    title = "Component not found"


class ComponentExists(AppError):
    type = "/problems/component-exists"
    title = "A component has this name"
    status = 409


class ComponentClaimed(AppError):
    type = "/problems/component-claimed"
    title = "An open incident or a maintenance window holds the component"
    status = 409


class InvalidComponentCursor(ValidationFailed):
    type = "/problems/invalid-cursor"
    title = "Invalid cursor"

    def __init__(self) -> None:
        super().__init__(
            "The cursor is not one this API returned; start again without it",
            errors=[
                {"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "invalid_cursor"}
            ],
        )


def etag(component: Component) -> str:
    return f'"{component.id}.{component.version}"'


def check_if_match(component: Component, if_match: str | None) -> None:
    """412 unless ``If-Match`` is absent, ``*``, or names the current ETag."""
    if if_match is None or not if_match.strip():
        return
    tags = [tag.strip().removeprefix("W/") for tag in if_match.split(",")]
    if "*" in tags or etag(component) in tags:
        return
    raise PreconditionFailed(
        f"The component changed: its ETag is {etag(component)}, If-Match gave {if_match}; "
        "read it again and retry"
    )


# -- the list's keyset: (group, position, name), ungrouped first -----------------------

_GROUP_KEY = func.coalesce(Component.group_name, "")
# A cursor is ``<group>.<position>.<name>`` of the last item returned, group and name as
# the hex of their UTF-8 bytes. Every text matching CURSOR_PATTERN is a position in the
# list's order (bytes that are not UTF-8 decode to U+FFFD), so the schema states exactly
# what the API accepts.
_HEX_TEXT = r"([0-9a-f]{2}){0,400}"
CURSOR_PATTERN = rf"^({_HEX_TEXT}\.[0-9]{{1,6}}\.{_HEX_TEXT})?$"
CURSOR_MAX_LENGTH = 1608
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True)
class Position:
    group: str
    position: int
    name: str


@dataclass(frozen=True)
class ListParams:
    limit: int
    after: Position | None


def encode_cursor(component: Component) -> str:
    group = (component.group_name or "").encode().hex()
    return f"{group}.{component.position}.{component.name.encode().hex()}"


def _text(hex_text: str) -> str:
    # NUL never occurs in a stored name, and PostgreSQL cannot compare with it.
    return bytes.fromhex(hex_text).decode("utf-8", "replace").replace("\x00", "")


def decode_cursor(value: str) -> Position:
    if not _CURSOR.fullmatch(value):
        raise InvalidComponentCursor()
    group, position, name = value.split(".")
    return Position(_text(group), int(position), _text(name))


async def list_page(
    session: AsyncSession, params: ListParams
) -> tuple[list[Component], str | None]:
    statement = select(Component)
    if params.after is not None:
        after = params.after
        statement = statement.where(
            tuple_(_GROUP_KEY, Component.position, Component.name)
            > tuple_(
                bindparam(None, after.group, type_=Component.group_name.type),
                bindparam(None, after.position, type_=Component.position.type),
                bindparam(None, after.name, type_=Component.name.type),
            )
        )
    statement = statement.order_by(_GROUP_KEY, Component.position, Component.name).limit(
        params.limit + 1
    )
    rows = list((await session.scalars(statement)).all())
    if len(rows) <= params.limit:
        return rows, None
    rows = rows[: params.limit]
    return rows, encode_cursor(rows[-1])


# -- reading ---------------------------------------------------------------------------


async def get(session: AsyncSession, component_id: str) -> Component:
    component = await session.scalar(
        select(Component)
        .where(Component.id == component_id)
        .execution_options(populate_existing=True)
    )
    if component is None:
        raise ComponentNotFound(f"No component {component_id!r}")
    return component


async def claims_of(
    session: AsyncSession, component_ids: Sequence[str]
) -> dict[str, list[ComponentStatusClaim]]:
    grouped: dict[str, list[ComponentStatusClaim]] = {i: [] for i in component_ids}
    if not component_ids:
        return grouped
    rows = await session.scalars(
        select(ComponentStatusClaim)
        .where(ComponentStatusClaim.component_id.in_(component_ids))
        .order_by(ComponentStatusClaim.created_at, ComponentStatusClaim.source_id)
    )
    for claim in rows:
        grouped[claim.component_id].append(claim)
    return grouped


# -- changing --------------------------------------------------------------------------


async def _check_name(session: AsyncSession, name: str, component_id: str | None) -> None:
    """409 when another component has ``name``, ignoring case (compared here, the same
    way on every database; the unique constraint still refuses an exact duplicate that
    a concurrent request wrote meanwhile)."""
    wanted = name.casefold()
    for other_id, other in (await session.execute(select(Component.id, Component.name))).all():
        if other_id != component_id and other.casefold() == wanted:
            raise ComponentExists(f"The component {other!r} exists; names are unique ignoring case")


async def _check_services(session: AsyncSession, refs: Sequence[str]) -> None:
    if not refs:
        return
    pairs = [tuple(ref.split("/", 1)) for ref in refs]
    found = {
        f"{env}/{name}"
        for env, name in (
            await session.execute(
                select(Service.environment, Service.name).where(
                    tuple_(Service.environment, Service.name).in_(pairs)
                )
            )
        ).all()
    }
    missing = [(i, ref) for i, ref in enumerate(refs) if ref not in found]
    if missing:
        raise ValidationFailed(
            "No such service: " + ", ".join(ref for _, ref in missing),
            errors=[
                {
                    "loc": ["body", "services", i],
                    "msg": f"no service {ref!r} (environment/service) exists",
                    "type": "unknown_service",
                }
                for i, ref in missing
            ],
        )


async def create(uow: UnitOfWork, principal: Principal, body: ComponentCreate) -> Component:
    """A new component; its status is the one given (no event: nothing changed)."""
    session = uow.session
    await _check_name(session, body.name, None)
    await _check_services(session, body.services)
    now = utcnow()
    component = Component(
        id=new_id(),
        name=body.name,
        description=body.description,
        group_name=body.group,
        position=body.position,
        status=body.status,
        manual_status=body.status,
        services=list(body.services),
        showcase=body.showcase,
        status_changed_at=now,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(component)
    await session.flush()
    await revision.bump(session)
    await _audit(uow, principal, "component.create", component.id, body.model_dump(mode="json"))
    return component


async def _locked(session: AsyncSession, component_id: str) -> Component:
    component = await session.scalar(
        select(Component)
        .where(Component.id == component_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if component is None:
        raise ComponentNotFound(f"No component {component_id!r}")
    return component


async def update(
    uow: UnitOfWork,
    principal: Principal,
    component_id: str,
    body: ComponentUpdate,
    if_match: str | None,
) -> Component:
    """Change the fields given. A new ``status`` is the operator's (``manual_status``);
    readers see the worst of it and the claims, and a change of what they see emits
    ``component.status_changed`` once."""
    session = uow.session
    component = await _locked(session, component_id)
    check_if_match(component, if_match)
    given = body.model_fields_set
    changes: dict[str, Any] = {}

    def change(field: str, attribute: str, value: Any) -> None:
        old = getattr(component, attribute)
        if old != value:
            changes[field] = {"from": old, "to": value}
            setattr(component, attribute, value)

    if body.name is not None:
        await _check_name(session, body.name, component.id)
        change("name", "name", body.name)
    if body.services is not None:
        await _check_services(session, body.services)
        change("services", "services", list(body.services))
    if body.description is not None:
        change("description", "description", body.description)
    if "group" in given:
        change("group", "group_name", body.group)
    if body.position is not None:
        change("position", "position", body.position)
    if body.showcase is not None:
        change("showcase", "showcase", body.showcase)
    if body.status is not None:
        change("status", "manual_status", body.status)
    if not changes:
        return component
    component.updated_at = utcnow()
    component.version += 1
    await session.flush()
    if "status" in changes:
        # The only way `status` changes; flushed above, so the re-read sees this change.
        await claims.recompute(session, [component.id], now=component.updated_at)
    await revision.bump(session)
    await _audit(uow, principal, "component.update", component.id, {"changes": changes})
    return await get(session, component.id)


async def delete(
    uow: UnitOfWork, principal: Principal, component_id: str, if_match: str | None
) -> None:
    """Refused (409) while an open incident or an in-progress window claims it: ending
    them first keeps their record of it."""
    session = uow.session
    component = await _locked(session, component_id)
    check_if_match(component, if_match)
    held = (await claims_of(session, [component.id]))[component.id]
    if held:
        names = ", ".join(f"{c.source_type} {c.source_id}" for c in held)
        raise ComponentClaimed(
            f"{names} holds the component at a status; resolve or end it first",
            extra={
                "claims": [{"source_type": c.source_type, "source_id": c.source_id} for c in held]
            },
        )
    await session.delete(component)
    await session.flush()
    await revision.bump(session)
    await _audit(uow, principal, "component.delete", component.id, {"name": component.name})


async def _audit(
    uow: UnitOfWork, principal: Principal, action: str, resource_id: str, summary: dict[str, Any]
) -> None:
    await audit_service.record(
        uow.session,
        principal,
        action=action,
        resource_type="component",
        resource_id=resource_id,
        summary=summary,
    )
