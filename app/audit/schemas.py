from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.audit.models import ActorKind, Outcome


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    seq: int | None = Field(
        description="Place in the hash chain; null until the sealer links the event, "
        "shortly after its commit."
    )
    created_at: dt.datetime
    actor_token_id: str | None
    actor_name: str | None
    actor_role: str | None
    actor_kind: ActorKind | None = Field(
        description="`token`, `system`, `run` (a worker-side change) or `anonymous`; null "
        "on events recorded before it existed."
    )
    origin_token_id: str | None = Field(
        description="For a run's own changes: the token that requested the run."
    )
    client_address: str | None
    request_id: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    outcome: Outcome
    summary: dict[str, Any] = Field(
        description="What the request changed, without secrets. The secrets rule is applied "
        "again as events are read, so events stored before a rule existed show no more "
        "than new ones; `GET /v1/audit-events/verify` checks the hashes of what is stored."
    )
    prev_hash: str | None
    hash: str | None


class AuditEventList(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None


class BrokenLinkOut(BaseModel):
    seq: int
    id: str | None
    reason: str


class AuditVerification(BaseModel):
    valid: StrictBool
    checked: int
    head_seq: int
    broken: BrokenLinkOut | None
    unsealed: int = Field(description="Events appended and not sealed into the chain yet.")
    overdue: int = Field(
        description="Of them, those older than the seal bound (the trail is then not valid)."
    )
