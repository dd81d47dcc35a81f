"""Request dependencies, each declared once as an ``Annotated`` alias."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.context import AppContext
from app.core.db import UnitOfWork


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
