"""Request dependencies, each declared once as an ``Annotated`` alias."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import AppContext
from app.db import UnitOfWork


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
