"""Requests and responses of ``/v1/backups``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from app.backups.models import BackupOrigin, BackupStatus
from app.core.schemas import RequestModel
from app.environments.schemas import NAME

BACKUP_ID = r"^[0-9A-Za-z_-]{1,36}$"
BackupId = Annotated[str, Path(min_length=1, max_length=36, pattern=BACKUP_ID)]


class BackupCreate(RequestModel):
    """What to back up: an environment's database (`environment`) or the control plane's
    own (`self: true`), exactly one of them."""

    environment: str | None = Field(
        default=None, pattern=NAME, max_length=63, description="Its `database_url` is dumped."
    )
    self_: StrictBool = Field(
        default=False,
        alias="self",
        description="Back up the control plane's own database instead.",
    )
    dry_run: StrictBool = Field(default=False, description="Return the plan; write nothing.")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_target(self) -> BackupCreate:
        if (self.environment is None) == (not self.self_):
            raise ValueError('give either "environment" or "self": true (not both)')
        return self


class BackupLinks(BaseModel):
    self: str
    run: str = Field(description="The run that took it (a backup, deployment or restore).")
    events: str = Field(description="The progress events of that run.")
    verification_run: str | None = Field(description="The run of the last restore drill.")


class BackupOut(BaseModel):
    id: str
    run_id: str
    origin: BackupOrigin
    environment: str | None = Field(description="Null: the control plane's own database.")
    database: str
    engine: Literal["postgresql", "sqlite"]
    format: str = Field(description="`custom`, `plain` (PostgreSQL) or `sqlite`.")
    status: BackupStatus
    storage_url: str = Field(description="Where the object is (`s3://…` or `file://…`).")
    object_key: str
    size_bytes: int | None
    sha256: str | None
    row_counts: dict[str, int] = Field(
        description="Exact row counts of its largest tables, taken with the dump."
    )
    duration_seconds: float | None
    error: str | None = Field(description="Why it failed (redacted).")
    created_at: dt.datetime
    finished_at: dt.datetime | None
    verified_at: dt.datetime | None = Field(description="When its last restore drill passed.")
    restore_seconds: float | None = Field(
        description="How long the last restore drill took (the measured recovery time)."
    )
    verification: dict[str, Any] | None = Field(
        description="The last drill: row counts restored, mismatches, smoke queries."
    )
    verification_run_id: str | None
    deleted_at: dt.datetime | None
    deleted_by: str | None
    links: BackupLinks


class BackupList(BaseModel):
    items: list[BackupOut]
    next_cursor: str | None


class BackupPlan(BaseModel):
    """What a backup would do: nothing was written, queued or executed."""

    dry_run: Literal[True] = True
    environment: str | None
    database: str
    engine: Literal["postgresql", "sqlite"]
    format: str
    object_key: str
    storage_url: str
