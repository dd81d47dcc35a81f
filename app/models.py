"""Imports every table module so ``Base.metadata`` is complete (Alembic, tests)."""

from app.audit.models import AuditChainHead, AuditEvent
from app.auth.models import ApiToken
from app.idempotency import IdempotencyRecord
from app.outbox import OutboxEvent
from app.runs.models import Run, RunEvent, Step

__all__ = [
    "ApiToken",
    "AuditChainHead",
    "AuditEvent",
    "IdempotencyRecord",
    "OutboxEvent",
    "Run",
    "RunEvent",
    "Step",
]
