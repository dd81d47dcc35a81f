"""Keyset pagination: ``?limit=&cursor=`` in, ``{"items": [...], "next_cursor": ...}`` out.

Pages are ordered newest first by ``(created_at, id)``; the cursor is the position of
the last item returned, so inserts never shift or repeat items across pages.

The query parameters themselves (``CursorParamsDep``) are a request dependency of
:mod:`app.core.deps`: this module is the services' (and the worker's), without FastAPI.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, bindparam, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.core.errors import ValidationFailed

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


# A cursor is ``<microseconds since the epoch>.<id>`` of the last item returned. Every
# text matching CURSOR_PATTERN is a position (an empty one: the first page), and it is
# what ``encode_cursor`` emits, so the schema states exactly what the API accepts.
_CURSOR_ID = r"[0-9A-Za-z_-]{1,64}"
CURSOR_PATTERN = rf"^(-?[0-9]{{1,18}}\.{_CURSOR_ID})?$"
_CURSOR = re.compile(CURSOR_PATTERN)
_ID = re.compile(_CURSOR_ID)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MIN_MICROS = (dt.datetime.min.replace(tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
_MAX_MICROS = (dt.datetime.max.replace(tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)


def encode_cursor(created_at: dt.datetime, id: str) -> str:
    if not _ID.fullmatch(id):
        raise ValueError(f"an id a cursor cannot carry: {id!r}")
    micros = (created_at - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}.{id}"


def decode_cursor(value: str) -> Cursor:
    if not _CURSOR.fullmatch(value):
        raise InvalidCursor()
    stamp, _, id = value.partition(".")
    # Positions beyond the datetimes a database stores are its ends: before the
    # first item or after the last.
    micros = min(max(int(stamp), _MIN_MICROS), _MAX_MICROS)
    return Cursor(_EPOCH + dt.timedelta(microseconds=micros), id)


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
