"""The seeded error-rate query answers 0 (not "no data") for a service that answered no
5xx in the window: ``sum(rate(...{status=~"5.."}...))`` of no series is empty, so the
numerator falls back to ``vector(0)``. Only a query still as seeded is changed.

Revision ID: 0010_verify
Revises: 0009_status
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_verify"
down_revision: str | Sequence[str] | None = "0009_status"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEEDED = (
    '100 * sum(rate(http_requests_total{service="$service",status=~"5.."}[$window]))'
    ' / sum(rate(http_requests_total{service="$service"}[$window]))'
)
ZERO_WHEN_NO_ERRORS = (
    '100 * (sum(rate(http_requests_total{service="$service",status=~"5.."}[$window]))'
    " or vector(0))"
    ' / sum(rate(http_requests_total{service="$service"}[$window]))'
)


def _replace(old: str, new: str) -> None:
    op.execute(
        sa.text(
            "UPDATE threshold SET prometheus_query = :new "
            "WHERE name = 'error_rate' AND prometheus_query = :old"
        ).bindparams(new=new, old=old)
    )


def upgrade() -> None:
    _replace(SEEDED, ZERO_WHEN_NO_ERRORS)


def downgrade() -> None:
    _replace(ZERO_WHEN_NO_ERRORS, SEEDED)
