"""What clients see of the catalog, and the body that starts a runbook."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
)

from app.auth.roles import Role
from app.core.schemas import PRINTABLE, RequestModel
from app.runs.schemas import DryRun

# A string value: printable text (no control character), as every request string.
ParameterText = Annotated[StrictStr, StringConstraints(pattern=PRINTABLE, max_length=1000)]
ParameterValue = ParameterText | StrictInt | StrictBool


class RunbookRunCreate(RequestModel):
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict,
        max_length=50,
        description="The runbook's parameters (its `parameters` schema); defaults fill the rest.",
    )
    dry_run: StrictBool = Field(default=False, description="Return the plan; execute nothing.")


class DefaultScheduleOut(BaseModel):
    cron: str
    timezone: str
    parameters: dict[str, ParameterValue]


class RunbookStepOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    action: str
    with_: dict[str, Any] = Field(
        alias="with",
        description="The action's arguments; `{\"param\": NAME}` stands for a parameter's value.",
    )
    on_failure: Literal["abort", "continue"]
    idempotent: bool | None = Field(description="Declared; null: what the action declares.")
    timeout_seconds: float
    when: dict[str, Any] | None = Field(
        description="The step is planned only when this condition on a parameter holds."
    )


class RunbookSummary(BaseModel):
    name: str
    title: str
    description: str
    kind: Literal["maintenance", "playbook"]
    role: Role = Field(description="The role a token needs to start it.")
    idempotent: bool = Field(description="Whether running it again is safe.")
    writes: bool = Field(description="Whether it changes data (then only admins start it).")
    seed: str | None = Field(description="The section of the operations runbook it encodes.")
    parameters: dict[str, Any] = Field(description="Its parameters as a JSON schema.")
    schedule: DefaultScheduleOut | None = Field(
        description="The schedule created for it on first start, if any."
    )


class RunbookOut(RunbookSummary):
    steps: list[RunbookStepOut]
    source: str = Field(description="The catalog file it comes from.")


class RunbookList(BaseModel):
    items: list[RunbookSummary]
    next_cursor: str | None


class RunbookDryRun(DryRun):
    runbook: str
    parameters: dict[str, ParameterValue] = Field(description="With the defaults filled in.")
