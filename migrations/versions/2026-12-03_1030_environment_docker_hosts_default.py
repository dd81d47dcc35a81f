"""An environment's Docker hosts default to none in the database too.

0013 made ``environment.docker_hosts`` NOT NULL with no server default: the previous
release, which does not know the column, could no longer create an environment while
both ran side by side during an upgrade. With a server default its INSERT stands.

Revision ID: 0014_docker_hosts_default
Revises: 0013_runbooks
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_docker_hosts_default"
down_revision: str | Sequence[str] | None = "0013_runbooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("environment") as batch:
        batch.alter_column(
            "docker_hosts", existing_type=sa.JSON(), existing_nullable=False, server_default="[]"
        )


def downgrade() -> None:
    with op.batch_alter_table("environment") as batch:
        batch.alter_column(
            "docker_hosts", existing_type=sa.JSON(), existing_nullable=False, server_default=None
        )
