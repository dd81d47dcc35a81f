"""``/v1/audit-events``: read and verify the audit trail (viewer)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from app.audit import presenters, service
from app.audit.models import Outcome
from app.audit.schemas import AuditEventList, AuditVerification
from app.auth.deps import Viewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.core.deps import ContextDep, CursorParamsDep, SessionDep
from app.core.errors import problem_responses
from app.core.paths import V1
from app.core.schemas import PRINTABLE, Timestamp

router = APIRouter(prefix=f"{V1}/audit-events", tags=["audit"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None


@router.get(
    "",
    operation_id="listAuditEvents",
    summary="List audit events",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_audit_events(
    principal: Viewer,
    session: SessionDep,
    page: CursorParamsDep,
    actor: Annotated[
        str | None, Query(max_length=200, pattern=PRINTABLE, description="Token id.")
    ] = None,
    action: Annotated[
        str | None, Query(max_length=100, pattern=PRINTABLE, examples=["token.create"])
    ] = None,
    resource_type: Annotated[str | None, Query(max_length=50, pattern=PRINTABLE)] = None,
    resource_id: Annotated[str | None, Query(max_length=100, pattern=PRINTABLE)] = None,
    outcome: Outcome | None = None,
    since: Annotated[Timestamp | None, Query(description="Inclusive, RFC 3339.")] = None,
    until: Annotated[Timestamp | None, Query(description="Exclusive, RFC 3339.")] = None,
) -> AuditEventList:
    """Newest first; filters combine. Events not sealed into the chain yet are listed
    too, with `seq`, `prev_hash` and `hash` null."""
    filters = service.AuditFilters(
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        outcome=outcome,
        since=_utc(since),
        until=_utc(until),
    )
    rows, next_cursor = await service.list_page(session, filters, page)
    return AuditEventList(items=[presenters.event_out(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/verify",
    operation_id="verifyAuditTrail",
    summary="Verify the audit chain",
    responses=problem_responses(*AUTH_ERRORS),
)
async def verify_audit_trail(
    principal: Viewer, session: SessionDep, context: ContextDep
) -> AuditVerification:
    """Recomputes every hash and link of the sealed chain; names the first event that
    does not match, or else the oldest event left unsealed for longer than the bound."""
    bound = context.settings.audit_seal_bound_seconds
    return presenters.verification_out(await service.verify(session, bound_seconds=bound))
