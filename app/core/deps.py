"""Request dependencies, each declared once as an ``Annotated`` alias."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.context import AppContext
from app.core.db import SharedTransaction, UnitOfWork
from app.core.pagination import (
    CURSOR_PATTERN,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    CursorParams,
    decode_cursor,
)


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_session(context: ContextDep) -> AsyncIterator[AsyncSession]:
    """A read-only session; writes go through :data:`UnitOfWorkDep`."""
    async with context.sessionmaker() as session:
        yield session


def get_unit_of_work(context: ContextDep) -> UnitOfWork:
    return context.unit_of_work()


SessionDep = Annotated[AsyncSession, Depends(get_session)]
UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_unit_of_work)]

_SHARES = "_formula_ops_shares_transaction"


async def get_shared_transaction(
    request: Request, context: ContextDep
) -> AsyncIterator[SharedTransaction | None]:
    """The request's one transaction when its route takes :data:`SharedUnitOfWorkDep` and
    the database is PostgreSQL, else None (each part opens a session of its own).
    Authentication and the ``Idempotency-Key`` check read in it, the unit of work takes it
    over; whatever is left open when the request ends is rolled back here.

    Not on SQLite: a write transaction takes the database's write lock when it begins
    (``BEGIN IMMEDIATE``), which would then be held from authentication on."""
    if context.engine.dialect.name != "postgresql" or not _shares(request.scope.get("route")):
        yield None
        return
    shared = SharedTransaction(context.write_sessionmaker)
    try:
        yield shared
    finally:
        await shared.close()


SharedTransactionDep = Annotated[SharedTransaction | None, Depends(get_shared_transaction)]


def get_shared_unit_of_work(context: ContextDep, shared: SharedTransactionDep) -> UnitOfWork:
    return context.unit_of_work(shared)


# A writing route whose authentication, Idempotency-Key check and change take one pooled
# connection and one transaction (PostgreSQL): see :func:`get_shared_transaction`.
SharedUnitOfWorkDep = Annotated[UnitOfWork, Depends(get_shared_unit_of_work)]


def _shares(route: object) -> bool:
    """Whether ``route`` takes :data:`SharedUnitOfWorkDep` (worked out once per route)."""
    if route is None:
        return False
    known = getattr(route, _SHARES, None)
    if known is None:
        dependant = getattr(route, "dependant", None)
        known = dependant is not None and _depends_on(dependant, get_shared_unit_of_work)
        setattr(route, _SHARES, known)
    return bool(known)


def _depends_on(dependant: Dependant, call: object) -> bool:
    return any(sub.call is call or _depends_on(sub, call) for sub in dependant.dependencies)


async def forbid_unknown_query(request: Request) -> None:
    """Unknown query parameters are a 422, like unknown body fields: a mistyped filter
    (``?actr=``) must not silently list everything."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        message, code = "Unknown query parameter", "extra_forbidden"
        raise RequestValidationError(
            [{"loc": ("query", name), "msg": message, "type": code} for name in unknown]
        )


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


# RFC 9110 If-Match: `*` or a list of entity-tags (`"..."` or `W/"..."`).
_ENTITY_TAG = r'(W/)?"[\x21\x23-\x7e]*"'
IF_MATCH = rf"^(\*|{_ENTITY_TAG}([ \t]*,[ \t]*{_ENTITY_TAG})*)$"
IfMatch = Annotated[
    str | SkipJsonSchema[None],
    Header(
        alias="If-Match",
        max_length=200,
        pattern=IF_MATCH,
        # Repeated for the schema: a constraint on `str | None` is checked but not shown.
        json_schema_extra={"pattern": IF_MATCH},
        description="The ETag read before; a stale one is refused with 412.",
    ),
]


def cursor_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1-200).")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | SkipJsonSchema[None],
        Query(
            max_length=512,
            # Stated, not enforced here: decode_cursor answers a mismatch with its problem.
            json_schema_extra={"pattern": CURSOR_PATTERN},
            description="Opaque: the `next_cursor` of the previous page (empty: the first).",
        ),
    ] = None,
) -> CursorParams:
    return CursorParams(limit=limit, cursor=decode_cursor(cursor) if cursor else None)


CursorParamsDep = Annotated[CursorParams, Depends(cursor_params)]
