"""Requests and responses of ``/v1/backups``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from app.backups.models import BackupOrigin, BackupStatus
from app.core.schemas import RequestModel
from app.environments.schemas import NAME

BACKUP_ID = r"^[0-9A-Za-z_-]{1,36}$"
BackupId = Annotated[str, Path(min_length=1, max_length=36, pattern=BACKUP_ID)]


class BackupOfEnvironment(RequestModel):
    """A backup of an environment's database (its `database_url`)."""

    environment: str = Field(pattern=NAME, max_length=63)
    dry_run: StrictBool = Field(default=False, description="Return the plan; write nothing.")


def _true(value: bool) -> bool:
    if value is not True:
        raise ValueError("must be true (or name an environment instead)")
    return value


class BackupOfSelf(RequestModel):
    """A backup of the control plane's own database."""

    # Read by its name in the API only (`self`): `self_` is an unknown field, refused.
    model_config = ConfigDict(extra="forbid")

    self_: Annotated[StrictBool, AfterValidator(_true)] = Field(
        alias="self", json_schema_extra={"const": True}
    )
    dry_run: StrictBool = Field(default=False, description="Return the plan; write nothing.")


BackupCreate = BackupOfEnvironment | BackupOfSelf


def target_of(body: BackupOfEnvironment | BackupOfSelf) -> str | None:
    """The environment a request names (``None``: the control plane)."""
    return body.environment if isinstance(body, BackupOfEnvironment) else None


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
