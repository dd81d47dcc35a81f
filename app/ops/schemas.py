from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class DependencyCheck(BaseModel):
    status: Literal["ok", "unavailable"]
    latency_ms: float | None = None
    error: str | None = Field(default=None, description="Why the dependency is unavailable.")


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, DependencyCheck]
