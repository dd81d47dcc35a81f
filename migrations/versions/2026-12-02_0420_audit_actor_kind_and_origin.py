"""audit actor kind and origin

Worker-side changes are audited with the run as actor and the token that requested the
run as origin. Columns only (no batch copy: SQLite's append-only triggers stay).

Revision ID: 0005_audit_actor
Revises: 0004
Create Date: 2026-12-02 04:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_audit_actor"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_event", sa.Column("actor_kind", sa.String(length=16), nullable=True))
    op.add_column("audit_event", sa.Column("origin_token_id", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_event", "origin_token_id")
    op.drop_column("audit_event", "actor_kind")
