"""The seeded error-rate and latency queries select the environment as well as the
service: a Prometheus scraping several environments' ``backend`` otherwise mixes their
traffic into one figure. Only a query still as seeded is changed.

Revision ID: 0011_promql_environment
Revises: 0010_verify
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_promql_environment"
down_revision: str | Sequence[str] | None = "0010_verify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ERROR_RATE_BEFORE = (
    '100 * (sum(rate(http_requests_total{service="$service",status=~"5.."}[$window]))'
    " or vector(0))"
    ' / sum(rate(http_requests_total{service="$service"}[$window]))'
)
ERROR_RATE_AFTER = (
    "100 * (sum(rate(http_requests_total"
    '{service="$service",environment="$environment",status=~"5.."}[$window]))'
    " or vector(0))"
    ' / sum(rate(http_requests_total{service="$service",environment="$environment"}'
    "[$window]))"
)
LATENCY_BEFORE = (
    "1000 * histogram_quantile(0.95, sum by (le) "
    '(rate(http_request_duration_seconds_bucket{service="$service"}[$window])))'
)
LATENCY_AFTER = (
    "1000 * histogram_quantile(0.95, sum by (le) "
    "(rate(http_request_duration_seconds_bucket"
    '{service="$service",environment="$environment"}[$window])))'
)


def _replace(name: str, old: str, new: str) -> None:
    op.execute(
        sa.text(
            "UPDATE threshold SET prometheus_query = :new "
            "WHERE name = :name AND prometheus_query = :old"
        ).bindparams(name=name, new=new, old=old)
    )


def upgrade() -> None:
    _replace("error_rate", ERROR_RATE_BEFORE, ERROR_RATE_AFTER)
    _replace("latency_p95", LATENCY_BEFORE, LATENCY_AFTER)


def downgrade() -> None:
    _replace("error_rate", ERROR_RATE_AFTER, ERROR_RATE_BEFORE)
    _replace("latency_p95", LATENCY_AFTER, LATENCY_BEFORE)
