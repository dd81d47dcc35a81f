"""Router assembly: the versioned API under ``/v1`` and the public routes beside it.

Every domain adds its router to :data:`v1`; public routes are listed in
:data:`PUBLIC_PATHS` and nowhere else.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.ops.router import router as ops_router

v1 = APIRouter(prefix="/v1")

public = APIRouter()
public.include_router(ops_router)

PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})
