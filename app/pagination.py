"""Keyset pagination: ``?limit=&cursor=`` in, ``{"items": [...], "next_cursor": ...}`` out.

Pages are ordered newest first by ``(created_at, id)``; the cursor is the position of
the last item returned, so inserts never shift or repeat items across pages.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, Protocol, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, bindparam, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.errors import ValidationFailed
from app.schemas import is_printable

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class Cursor:
    created_at: dt.datetime
    id: str


@dataclass(frozen=True)
class CursorParams:
    limit: int
    cursor: Cursor | None


class InvalidCursor(ValidationFailed):
    type = "/problems/invalid-cursor"
    title = "Invalid cursor"

    def __init__(self) -> None:
        super().__init__(
            "The cursor is not one this API returned; start again without it",
            errors=[
                {"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "invalid_cursor"}
            ],
        )


def encode_cursor(created_at: dt.datetime, id: str) -> str:
    raw = json.dumps([created_at.astimezone(dt.UTC).isoformat(), id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        stamp, id = json.loads(raw)
        created_at = dt.datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        created_at = created_at.astimezone(dt.UTC)  # OverflowError: out of range
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError):
        raise InvalidCursor() from None
    if not isinstance(id, str) or not id or len(id) > 64 or not is_printable(id):
        raise InvalidCursor()
    return Cursor(created_at, id)


def cursor_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1-200).")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(max_length=512, description="`next_cursor` of the previous page."),
    ] = None,
) -> CursorParams:
    return CursorParams(limit=limit, cursor=decode_cursor(cursor) if cursor else None)


CursorParamsDep = Annotated[CursorParams, Depends(cursor_params)]


class Keyed(Protocol):
    created_at: dt.datetime


K = TypeVar("K", bound=Keyed)


def keyset_statement(
    statement: Select[K],
    params: CursorParams,
    *,
    created_at: InstrumentedAttribute[dt.datetime],
    id: InstrumentedAttribute[str],
) -> Select[K]:
    """``statement`` limited to one page (one row more, to tell whether another follows)."""
    if params.cursor is not None:
        # A row-value comparison, so the (created_at, id) index bounds the scan instead
        # of filtering every newer row (deep pages stay as fast as the first).
        after = tuple_(
            bindparam(None, params.cursor.created_at, type_=created_at.type),
            bindparam(None, params.cursor.id, type_=id.type),
        )
        statement = statement.where(tuple_(created_at, id) < after)
    return statement.order_by(created_at.desc(), id.desc()).limit(params.limit + 1)


async def paginate(
    session: AsyncSession,
    statement: Select[K],
    params: CursorParams,
    *,
    created_at: InstrumentedAttribute[dt.datetime],
    id: InstrumentedAttribute[str],
) -> tuple[Sequence[K], str | None]:
    """Run ``statement`` for one page; returns the rows and the next cursor (or None)."""
    page = keyset_statement(statement, params, created_at=created_at, id=id)
    rows = list((await session.scalars(page)).all())
    if len(rows) <= params.limit:
        return rows, None
    rows = rows[: params.limit]
    last = rows[-1]
    return rows, encode_cursor(last.created_at, str(getattr(last, id.key)))
