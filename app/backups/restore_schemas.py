"""What clients send and see of restores."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field, StrictBool

from app.core.schemas import MULTILINE, MULTILINE_NOTE, PRINTABLE, RequestModel
from app.runs.models import RunStatus
from app.runs.schemas import PlannedStep, RunFailure, StepOut


class RestoreCreate(RequestModel):
    backup_id: str = Field(
        min_length=1, max_length=64, pattern=PRINTABLE, description="The backup to restore."
    )
    confirm: str = Field(
        max_length=200,
        pattern=PRINTABLE,
        description="The name of the database the backup restores over (its `database`), "
        "typed out: the restore replaces that database's contents.",
    )
    force: StrictBool = Field(
        default=False,
        description="Restore a backup whose restore drill failed (`unverifiable`); needs a "
        "`reason`.",
    )
    reason: str | None = Field(
        default=None,
        max_length=2000,
        pattern=MULTILINE,
        description="Why (required with `force`; audited). " + MULTILINE_NOTE,
    )
    dry_run: StrictBool = Field(
        default=False, description="Check the request and return the plan; execute nothing."
    )


class RestoreLinks(BaseModel):
    self: str
    run: str
    events: str
    backup: str


class RestoredBackup(BaseModel):
    """The backup a restore writes back (null once its row is gone)."""

    id: str
    status: str = Field(description="`success`, `unverifiable` (forced), or `deleted` since.")
    created_at: dt.datetime
    size_bytes: int | None
    sha256: str | None


class RestoreOut(BaseModel):
    id: str
    backup_id: str
    backup: RestoredBackup | None
    environment: str | None
    database: str
    target: str = Field(description="`<environment>/<database>`.")
    status: RunStatus
    active: StrictBool = Field(description="It holds its target: no other restore of it starts.")
    forced: StrictBool
    reason: str | None = Field(description="Why it was forced.")
    pre_restore_backup_id: str | None = Field(
        description="The safety backup of the target taken before it was overwritten."
    )
    restore_seconds: float | None = Field(description="How long writing the backup back took.")
    failure: RunFailure | None
    requested_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    cancel_requested: StrictBool
    steps: list[StepOut]
    links: RestoreLinks


class RestoreList(BaseModel):
    items: list[RestoreOut]
    next_cursor: str | None


class RestoreDryRun(BaseModel):
    """What would run: the request passed every check; nothing was written or queued."""

    dry_run: Literal[True] = True
    backup_id: str
    target: str
    forced: StrictBool
    steps: list[PlannedStep]
