"""Imports every table module so ``Base.metadata`` is complete (Alembic, tests)."""

from app.outbox import OutboxEvent
from app.runs.models import Run, Step

__all__ = ["OutboxEvent", "Run", "Step"]
