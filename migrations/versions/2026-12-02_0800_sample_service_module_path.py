"""The sample service moved to ``app.embedded.sample_service``: services seeded with the
old module path (``python -m app.sample_service``) are pointed at the new one.

Revision ID: 0006_sample_service_path
Revises: 0005_audit_actor
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_sample_service_path"
down_revision: str | Sequence[str] | None = "0005_audit_actor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD, NEW = "app.sample_service", "app.embedded.sample_service"


def _rewrite(old: str, new: str) -> None:
    service = sa.table("service", sa.column("id", sa.String), sa.column("config", sa.JSON))
    bind = op.get_bind()
    for row in bind.execute(sa.select(service.c.id, service.c.config)):
        config = row.config if isinstance(row.config, dict) else json.loads(row.config or "{}")
        command = config.get("command")
        if isinstance(command, list) and old in command:
            config["command"] = [new if part == old else part for part in command]
            bind.execute(service.update().where(service.c.id == row.id).values(config=config))


def upgrade() -> None:
    _rewrite(OLD, NEW)


def downgrade() -> None:
    _rewrite(NEW, OLD)
