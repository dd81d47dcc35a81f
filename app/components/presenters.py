"""Component rows as clients see them."""

from __future__ import annotations

from app.components.models import Component, ComponentStatusClaim
from app.components.schemas import ClaimOut, ComponentOut
from app.core.paths import V1


def location(component_id: str) -> str:
    return f"{V1}/components/{component_id}"


def claim_out(claim: ComponentStatusClaim) -> ClaimOut:
    return ClaimOut(
        source_type=claim.source_type,
        source_id=claim.source_id,
        status=claim.status,
        since=claim.created_at,
    )


def component_out(component: Component, claims: list[ComponentStatusClaim]) -> ComponentOut:
    return ComponentOut(
        id=component.id,
        name=component.name,
        description=component.description,
        group=component.group_name,
        position=component.position,
        status=component.status,
        manual_status=component.manual_status,
        claims=[claim_out(c) for c in claims],
        services=list(component.services),
        showcase=component.showcase,
        status_changed_at=component.status_changed_at,
        created_at=component.created_at,
        updated_at=component.updated_at,
        version=component.version,
        links={"self": location(component.id)},
    )
