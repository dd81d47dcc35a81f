"""Audit events and chain verifications as clients see them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from app.audit.models import AuditEvent
from app.audit.schemas import AuditEventOut, AuditVerification, BrokenLinkOut
from app.audit.service import Verification
from app.core.redaction import redact_value


def event_out(event: AuditEvent) -> AuditEventOut:
    """An event with its summary passed through the secrets rule again: the trail is
    append-only, so what an earlier version stored stays stored, and is hidden here."""
    out = AuditEventOut.model_validate(event)
    summary: dict[str, Any] = redact_value(out.summary)
    return out.model_copy(update={"summary": summary})


def verification_out(result: Verification) -> AuditVerification:
    return AuditVerification(
        valid=result.valid,
        checked=result.checked,
        head_seq=result.head_seq,
        broken=BrokenLinkOut(**asdict(result.broken)) if result.broken else None,
        unsealed=result.unsealed,
        overdue=result.overdue,
    )
