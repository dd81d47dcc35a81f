"""audit rows sealed after commit

An audit row is appended without its place in the hash chain (``seq``, ``prev_hash`` and
``hash`` empty), so writers no longer share the chain head's row lock; a single sealer
links committed rows into the chain shortly after (``sealed_at``). The append-only rule
now lets exactly that happen: an unsealed row may be sealed once, its content unchanged;
nothing else may be updated, and nothing deleted.

Revision ID: 0007_audit_sealer
Revises: 0006_sample_service_path
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.core.db

revision: str = "0007_audit_sealer"
down_revision: str | Sequence[str] | None = "0006_sample_service_path"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every column a row is written with (the sealer may not change any of them).
CONTENT = (
    "id",
    "created_at",
    "actor_token_id",
    "actor_name",
    "actor_role",
    "actor_kind",
    "origin_token_id",
    "client_address",
    "request_id",
    "action",
    "resource_type",
    "resource_id",
    "outcome",
    "summary",
)
MESSAGE = "audit_event is append-only"

# Column by column (json has no equality; its text is compared): jsonb would refuse a
# summary holding an escaped NUL.
PG_UNCHANGED = " AND ".join(
    f"OLD.{c}::text IS NOT DISTINCT FROM NEW.{c}::text"
    if c == "summary"
    else f"OLD.{c} IS NOT DISTINCT FROM NEW.{c}"
    for c in CONTENT
)
PG_SEALABLE = f"""
CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL
     AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL AND {PG_UNCHANGED} THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '{MESSAGE}';
END $$
"""
PG_STRICT = (
    "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql "
    f"AS $$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$"
)
SQLITE_NO_DELETE = (
    "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
)
SQLITE_SEALABLE = (
    "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
    "WHEN OLD.seq IS NOT NULL OR NEW.seq IS NULL OR NEW.prev_hash IS NULL OR NEW.hash IS NULL "
    + "".join(f"OR NEW.{c} IS NOT OLD.{c} " for c in CONTENT)
    + f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
)
SQLITE_STRICT = (
    "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgres():
        op.add_column(
            "audit_event",
            sa.Column("sealed_at", app.core.db.UTCDateTime(timezone=True), nullable=True),
        )
        for column in ("seq", "prev_hash", "hash"):
            op.alter_column("audit_event", column, nullable=True)
        op.execute(PG_SEALABLE)
        return
    # SQLite copies the table to change a column, and its triggers go with the old copy.
    op.execute("DROP TRIGGER audit_event_no_update")
    op.execute("DROP TRIGGER audit_event_no_delete")
    with op.batch_alter_table("audit_event", recreate="always") as batch_op:
        batch_op.add_column(
            sa.Column("sealed_at", app.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.alter_column("seq", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=True)
    op.execute(SQLITE_SEALABLE)
    op.execute(SQLITE_NO_DELETE)


def downgrade() -> None:
    unsealed = op.get_bind().scalar(sa.text("SELECT count(*) FROM audit_event WHERE seq IS NULL"))
    if unsealed:
        raise RuntimeError(
            f"{unsealed} audit events are not sealed yet; start a worker (it seals them) "
            "before downgrading"
        )
    if _postgres():
        op.execute(PG_STRICT)
        for column in ("seq", "prev_hash", "hash"):
            op.alter_column("audit_event", column, nullable=False)
        op.drop_column("audit_event", "sealed_at")
        return
    op.execute("DROP TRIGGER audit_event_no_update")
    op.execute("DROP TRIGGER audit_event_no_delete")
    with op.batch_alter_table("audit_event", recreate="always") as batch_op:
        batch_op.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_column("sealed_at")
    op.execute(SQLITE_STRICT)
    op.execute(SQLITE_NO_DELETE)
