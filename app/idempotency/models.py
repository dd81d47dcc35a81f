"""The stored key of a request: its hash, the request's fingerprint and the sealed
response a retry replays."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow
from app.core.ids import new_id

COMPLETED = "completed"
IN_FLIGHT = "in_flight"  # only inside the claiming transaction; never committed as such


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_key"
    __table_args__ = (
        UniqueConstraint("token_id", "key_hash"),
        Index("ix_idempotency_key_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_id: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(16))  # in_flight | completed
    locked_until: Mapped[dt.datetime | None]  # unused: a key is never owned by age
    response_status: Mapped[int | None]
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
