"""Audit tables: the append-only event chain and its head."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.audit.vocabulary import ActorKind as ActorKind
from app.audit.vocabulary import Outcome as Outcome
from app.core.db import Base, utcnow
from app.core.ids import new_id

GENESIS_HASH = "0" * 64


class AuditEvent(Base):
    """One audited request or worker-side change. It is appended unsealed (``seq``,
    ``prev_hash`` and ``hash`` empty); the sealer (:mod:`app.audit.sealer`) then gives it
    its place in the chain: ``hash`` covers the content, ``seq`` and ``prev_hash``."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_created_at_id", "created_at", "id"),
        Index("ix_audit_event_actor_token_id_created_at", "actor_token_id", "created_at"),
        Index("ix_audit_event_action_created_at", "action", "created_at"),
        Index(
            "ix_audit_event_resource_type_resource_id_created_at",
            "resource_type",
            "resource_id",
            "created_at",
        ),
        Index("ix_audit_event_outcome_created_at", "outcome", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    seq: Mapped[int | None] = mapped_column(Integer, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor_token_id: Mapped[str | None] = mapped_column(String(16))
    actor_name: Mapped[str | None] = mapped_column(String(200))
    actor_role: Mapped[str | None] = mapped_column(String(16))
    # Null on events written before these columns existed (their hash does not cover them).
    actor_kind: Mapped[str | None] = mapped_column(String(16))
    origin_token_id: Mapped[str | None] = mapped_column(String(16))
    client_address: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str | None] = mapped_column(String(50))
    resource_id: Mapped[str | None] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(16))
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))
    sealed_at: Mapped[dt.datetime | None]


class AuditChainHead(Base):
    """The single row naming the chain's last sealed event; only the sealer writes it
    (one at a time), and it lets ``verify`` notice events deleted from the chain's end."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)
