"""Writing, reading and verifying the audit trail.

Each event is written in the transaction of the change it records: if it cannot be
written, the change does not happen either. It is appended unsealed, with no shared lock
(writers never wait on each other); the sealer (:mod:`app.audit.sealer`) links committed
events into the hash chain shortly after. ``verify`` checks the sealed chain and reports
events left unsealed for longer than the bound.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import GENESIS_HASH, ActorKind, AuditChainHead, AuditEvent, Outcome
from app.audit.summary import bounded_summary
from app.auth.principal import Principal
from app.core.db import UnitOfWork, utcnow
from app.core.errors import ServiceUnavailable
from app.core.ids import new_id
from app.core.logging import escape
from app.core.pagination import CursorParams, keyset_statement, paginate

logger = logging.getLogger(__name__)
HEAD_ID = 1
_INSERT = insert(AuditEvent.__table__)  # type: ignore[arg-type]  # compiled once, values as parameters


class AuditUnavailable(ServiceUnavailable):
    type = "/problems/audit-unavailable"
    title = "Audit trail unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The audit record of this request could not be written, so nothing was changed",
            headers={"Retry-After": "5"},
        )


def _content(event: Any) -> str:
    fields: list[Any] = [
        event.seq,
        event.id,
        event.created_at.astimezone(dt.UTC).isoformat(),
        event.actor_token_id,
        event.actor_name,
        event.actor_role,
        event.client_address,
        event.request_id,
        event.action,
        event.resource_type,
        event.resource_id,
        event.outcome,
        event.summary,
    ]
    # Fields added later are hashed when set, so events written before them still verify
    # and clearing one afterwards breaks the hash.
    added = {
        name: value
        for name, value in (
            ("actor_kind", event.actor_kind),
            ("origin_token_id", event.origin_token_id),
        )
        if value is not None
    }
    if added:
        fields.append(added)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class RunActor:
    """A run acting on its own (a worker finishing it, rolling it back, pinning): the
    event names the run, and the token that requested it as origin."""

    run_id: str
    requested_by: str | None

    @property
    def origin_token_id(self) -> str | None:
        by = self.requested_by or ""
        return by.removeprefix("token:") if by.startswith("token:") else None


Actor = Principal | RunActor | None


def _fit(value: str | None, column: Any) -> str | None:
    """``value`` escaped (:func:`app.core.logging.escape`) and cut to ``column``'s length: a
    refused request names its resource as the client wrote it (a path parameter refused
    for its length or its NUL), and the event is still written."""
    if value is None:
        return None
    length = column.type.length
    text = escape(value)
    return text[:length] if length else text


def _actor_fields(actor: Actor) -> dict[str, Any]:
    if isinstance(actor, RunActor):
        return {
            "actor_kind": ActorKind.RUN.value,
            "actor_token_id": None,
            "actor_name": f"run:{actor.run_id}",
            "actor_role": None,
            "origin_token_id": actor.origin_token_id,
        }
    if actor is None:
        return {
            "actor_kind": ActorKind.ANONYMOUS.value,
            "actor_token_id": None,
            "actor_name": None,
            "actor_role": None,
            "origin_token_id": None,
        }
    return {
        "actor_kind": (ActorKind.TOKEN if actor.token_id else ActorKind.SYSTEM).value,
        "actor_token_id": actor.token_id,
        "actor_name": actor.name,
        "actor_role": actor.role.value,
        "origin_token_id": None,
    }


def compute_hash(event: Any) -> str:
    """The hash of a sealed event (an :class:`AuditEvent` or any object with its fields)."""
    return hashlib.sha256(f"{event.prev_hash}\n{_content(event)}".encode()).hexdigest()


async def record(
    session: AsyncSession,
    principal: Actor,
    *,
    action: str,
    outcome: Outcome = Outcome.SUCCESS,
    resource_type: str | None = None,
    resource_id: str | None = None,
    summary: dict[str, Any] | None = None,
    client_address: str | None = None,
    request_id: str | None = None,
) -> str:
    """Append an unsealed event in the caller's transaction (one INSERT, no lock shared
    with other writers) and flush the caller's pending changes; returns the event's id.
    Raises :class:`AuditUnavailable`."""
    event_id = new_id()
    try:
        await session.execute(
            _INSERT,
            dict(
                id=event_id,  # every hashed field is set here, none left to column defaults
                created_at=utcnow(),
                **_actor_fields(principal),
                client_address=_fit(
                    principal.client_address
                    if isinstance(principal, Principal)
                    else client_address,
                    AuditEvent.client_address,
                ),
                request_id=principal.request_id if isinstance(principal, Principal) else request_id,
                action=action,
                resource_type=resource_type,
                resource_id=_fit(resource_id, AuditEvent.resource_id),
                outcome=outcome.value,
                summary=bounded_summary(summary or {}),
            ),
        )
        await session.flush()
    except SQLAlchemyError as exc:
        logger.error("audit write failed: %s", type(exc).__name__)
        raise AuditUnavailable() from exc
    return event_id


async def record_apart(
    unit_of_work: Callable[[], UnitOfWork],
    principal: Principal | None,
    *,
    action: str,
    outcome: Outcome,
    summary: dict[str, Any],
    client_address: str | None,
    request_id: str | None,
    resource_type: str | None = None,
    resource_id: str | None = None,
) -> bool:
    """Audit a refused request in a transaction of its own (the request changes nothing).

    The refusal is answered even when its audit record cannot be written; that is logged
    and False returned.
    """
    try:
        async with unit_of_work() as uow:
            await record(
                uow.session,
                principal,
                action=action,
                outcome=outcome,
                resource_type=resource_type,
                resource_id=resource_id,
                summary=summary,
                client_address=client_address,
                request_id=request_id,
            )
    except Exception:
        logger.error("could not audit a refused request (%s, %s)", action, outcome.value)
        return False
    return True


async def record_denial(
    unit_of_work: Callable[[], UnitOfWork],
    principal: Principal | None,
    *,
    reason: str,
    status: int,
    method: str,
    path: str,
    client_address: str | None,
    request_id: str | None,
) -> None:
    """Audit a request refused by authentication or authorisation (``auth.denied``)."""
    await record_apart(
        unit_of_work,
        principal,
        action="auth.denied",
        outcome=Outcome.DENIED,
        summary={"reason": reason, "status": status, "method": method, "path": path},
        client_address=client_address,
        request_id=request_id,
    )


@dataclass(frozen=True)
class AuditFilters:
    actor: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    outcome: Outcome | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def _filtered(filters: AuditFilters) -> Select[AuditEvent]:
    statement = select(AuditEvent)
    if filters.actor is not None:
        statement = statement.where(AuditEvent.actor_token_id == filters.actor)
    if filters.action is not None:
        statement = statement.where(AuditEvent.action == filters.action)
    if filters.resource_type is not None:
        statement = statement.where(AuditEvent.resource_type == filters.resource_type)
    if filters.resource_id is not None:
        statement = statement.where(AuditEvent.resource_id == filters.resource_id)
    if filters.outcome is not None:
        statement = statement.where(AuditEvent.outcome == filters.outcome.value)
    if filters.since is not None:
        statement = statement.where(AuditEvent.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(AuditEvent.created_at < filters.until)
    return statement


async def list_page(
    session: AsyncSession, filters: AuditFilters, page: CursorParams
) -> tuple[Sequence[AuditEvent], str | None]:
    return await paginate(
        session, _filtered(filters), page, created_at=AuditEvent.created_at, id=AuditEvent.id
    )


def list_statement(filters: AuditFilters, page: CursorParams) -> Select[AuditEvent]:
    """The SELECT :func:`list_page` runs (benchmarks and query-plan tests read it)."""
    return keyset_statement(
        _filtered(filters), page, created_at=AuditEvent.created_at, id=AuditEvent.id
    )


@dataclass(frozen=True)
class BrokenLink:
    seq: int
    id: str | None
    reason: str


@dataclass(frozen=True)
class Verification:
    valid: bool
    checked: int
    head_seq: int
    broken: BrokenLink | None
    unsealed: int = 0  # events appended and not sealed yet
    overdue: int = 0  # of them, those older than the seal bound


async def verify(
    session: AsyncSession, *, batch: int = 5000, bound_seconds: float = 2.0
) -> Verification:
    """Walk the sealed chain in order; report the first event that does not link or hash
    right, or else events left unsealed for longer than ``bound_seconds``."""
    # A sealer may commit while the chain is walked (a later head than the one read
    # first): then the walk is done again, up to three times, before a mismatch counts.
    for _ in range(3):
        walked = await _walk(session, batch)
        if isinstance(walked, Verification):
            return walked
        checked, head_seq, head_hash, prev_hash = walked
        if checked == head_seq and prev_hash == head_hash:
            break
        head = await session.get(AuditChainHead, HEAD_ID, populate_existing=True)
        if (head.seq if head else 0) == head_seq:
            break  # the head did not move: a real mismatch
    if checked != head_seq or prev_hash != head_hash:
        reason = f"the chain ends at event {checked} but its head names event {head_seq}"
        return Verification(False, checked, head_seq, BrokenLink(checked + 1, None, reason))
    cutoff = utcnow() - dt.timedelta(seconds=bound_seconds)
    unsealed = int(
        await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.seq.is_(None))
        )
        or 0
    )
    if not unsealed:
        return Verification(True, checked, head_seq, None)
    overdue = int(
        await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.seq.is_(None), AuditEvent.created_at < cutoff)
        )
        or 0
    )
    if not overdue:
        return Verification(True, checked, head_seq, None, unsealed, 0)
    oldest = await session.scalar(
        select(AuditEvent.id)
        .where(AuditEvent.seq.is_(None), AuditEvent.created_at < cutoff)
        .order_by(AuditEvent.created_at, AuditEvent.id)
        .limit(1)
    )
    reason = (
        f"{overdue} events not sealed within {bound_seconds:g} s (is a worker or an API "
        "process running? they seal the trail)"
    )
    return Verification(
        False, checked, head_seq, BrokenLink(checked + 1, oldest, reason), unsealed, overdue
    )


async def _walk(session: AsyncSession, batch: int) -> Verification | tuple[int, int, str, str]:
    """The sealed chain walked in order from the head read first: the first broken
    event's verdict, or (events checked, head seq, head hash, last hash)."""
    head = await session.get(AuditChainHead, HEAD_ID, populate_existing=True)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
    while True:
        rows = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.seq >= expected_seq)
                .order_by(AuditEvent.seq)
                .limit(batch)
            )
        ).all()
        for event in rows:
            broken = _check(event, expected_seq, prev_hash)
            if broken is not None:
                return Verification(False, checked, head_seq, broken)
            checked += 1
            expected_seq, prev_hash = (event.seq or 0) + 1, event.hash or ""
        if len(rows) < batch:
            return checked, head_seq, head_hash, prev_hash


def _check(event: AuditEvent, expected_seq: int, prev_hash: str) -> BrokenLink | None:
    if event.seq != expected_seq:
        return BrokenLink(expected_seq, None, f"event {expected_seq} is missing")
    if event.prev_hash != prev_hash:
        return BrokenLink(event.seq, event.id, "does not link to the event before it")
    if compute_hash(event) != event.hash:
        return BrokenLink(event.seq, event.id, "content does not match its hash")
    return None
