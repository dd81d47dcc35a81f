"""What a runbook file says (:class:`RunbookSpec`), and how a caller's parameters are
checked against its typed parameters (:meth:`RunbookSpec.check_parameters`).

A parameter reaches a step only as data: a step's arguments (``with``) may hold
``{param: NAME}``, which the plan replaces by the parameter's typed value; nothing is
spliced into a string, so a value can become an argv element, an environment value, a
SQL bind parameter or an API argument, never a command or a query.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from app.auth.roles import Role
from app.core.cron import Cron, InvalidCron, InvalidTimezone
from app.core.errors import ValidationFailed
from app.core.schemas import CONTROL

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
PARAM_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
ENVIRONMENT = "environment"  # the parameter that names the run's environment
MAX_STRING = 1000  # the longest string parameter, whatever the runbook says
# What no parameter's text may hold, whatever its pattern: control characters (the rule
# of every string a request carries, app.core.schemas) and lone surrogates (JSON can
# write them as "\ud800"; no UTF-8 database, response or log can hold them).
_REFUSED_TEXT = re.compile(rf"[{CONTROL}\ud800-\udfff]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StringParameter(_Strict):
    type: Literal["string"]
    description: str = ""
    pattern: str | None = Field(default=None, max_length=500)
    enum: list[StrictStr] | None = Field(default=None, min_length=1)
    min_length: int = Field(default=0, ge=0)
    max_length: int = Field(default=200, ge=1, le=MAX_STRING)
    default: StrictStr | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
            if not (value.startswith("^") and value.endswith("$")):
                raise ValueError("a pattern must be anchored (^…$)")
        return value

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if not self.min_length <= len(value) <= self.max_length:
            raise ValueError(f"must be {self.min_length} to {self.max_length} characters long")
        if _REFUSED_TEXT.search(value):
            raise ValueError("must not contain control characters or lone surrogates")
        if self.enum is not None and value not in self.enum:
            raise ValueError(f"must be one of {', '.join(self.enum)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ValueError(f"must match {self.pattern}")
        return value

    def sample(self) -> str:
        return self.default if self.default is not None else (self.enum or ["x"])[0]

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        return schema


class IntegerParameter(_Strict):
    type: Literal["integer"]
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None
    default: StrictInt | None = None

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be at most {self.maximum}")
        return value

    def sample(self) -> int:
        if self.default is not None:
            return self.default
        return self.minimum if self.minimum is not None else 1

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


class BooleanParameter(_Strict):
    type: Literal["boolean"]
    description: str = ""
    default: StrictBool | None = None

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    def sample(self) -> bool:
        return bool(self.default)

    def json_schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


Parameter = Annotated[
    StringParameter | IntegerParameter | BooleanParameter, Field(discriminator="type")
]
Scalar = StrictStr | StrictInt | StrictBool


class When(_Strict):
    """A plan-time condition on a parameter: the step is in the plan only when it holds."""

    param: str = Field(pattern=PARAM_NAME_PATTERN)
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    not_in: list[Scalar] | None = Field(default=None, min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_test(self) -> When:
        given = [t for t in (self.equals, self.in_, self.not_in) if t is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, in, not_in")
        return self

    def holds(self, values: dict[str, Any]) -> bool:
        value = values.get(self.param)
        if self.equals is not None:
            return bool(value == self.equals)
        if self.in_ is not None:
            return value in self.in_
        return value not in (self.not_in or [])

    def describe(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class StepDefinition(_Strict):
    name: str = Field(min_length=1, max_length=200)
    action: str = Field(min_length=1, max_length=64)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    on_failure: Literal["abort", "continue"] = "abort"
    idempotent: StrictBool | None = None
    timeout_seconds: float = Field(default=300.0, gt=0, le=7 * 86400)
    when: When | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DefaultSchedule(_Strict):
    cron: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    parameters: dict[str, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _parses(self) -> DefaultSchedule:
        try:
            Cron.parse(self.cron, self.timezone)
        except (InvalidCron, InvalidTimezone) as exc:
            raise ValueError(str(exc)) from None
        return self


class RunbookSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    kind: Literal["maintenance", "playbook"]
    role: Literal["deployer", "operator", "admin"] = "operator"
    idempotent: StrictBool = True
    writes: StrictBool = False
    seed: str | None = Field(
        default=None, max_length=500, description="The seed runbook's section it encodes."
    )
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    schedule: DefaultSchedule | None = None
    steps: list[StepDefinition] = Field(min_length=1, max_length=100)

    @field_validator("parameters")
    @classmethod
    def _parameter_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(PARAM_NAME_PATTERN, name):
                raise ValueError(f"parameter name {name!r} must match {PARAM_NAME_PATTERN}")
        env = value.get(ENVIRONMENT)
        if env is not None and not isinstance(env, StringParameter):
            raise ValueError("the environment parameter must be a string")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunbookSpec:
        if self.writes and self.role != Role.ADMIN.value:
            raise ValueError("a runbook that writes must require the admin role")
        names = [step.name for step in self.steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"step names must be unique: {', '.join(duplicates)}")
        if self.schedule is not None:
            try:
                self.check_parameters(dict(self.schedule.parameters))
            except ValidationFailed as exc:
                wrong = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in (exc.errors or []))
                raise ValueError(f"the default schedule's parameters: {wrong}") from None
        for parameter, spec in self.parameters.items():
            if spec.default is not None:
                try:
                    spec.check(spec.default)
                except ValueError as exc:
                    raise ValueError(f"default of {parameter}: {exc}") from None
        return self

    @property
    def required_role(self) -> Role:
        return Role(self.role)

    def parameters_schema(self) -> dict[str, Any]:
        """The parameters as a JSON schema (what ``GET /v1/runbooks/{name}`` shows)."""
        properties = {}
        for name, spec in self.parameters.items():
            schema = spec.json_schema()
            if spec.description:
                schema["description"] = spec.description
            if spec.default is not None:
                schema["default"] = spec.default
            properties[name] = schema
        return {
            "type": "object",
            "properties": properties,
            "required": [n for n, s in self.parameters.items() if s.default is None],
            "additionalProperties": False,
        }

    def check_parameters(self, values: dict[str, Any]) -> dict[str, Any]:
        """The caller's parameters with defaults filled in; 422 naming every bad one.
        An error says where and why, never echoes the value."""
        errors: list[dict[str, Any]] = []
        checked: dict[str, Any] = {}
        for name in values:
            if not re.fullmatch(PARAM_NAME_PATTERN, name):
                # Not echoed: a name may hold what no response can carry.
                errors.append(
                    {
                        "loc": ["body", "parameters"],
                        "msg": f"a parameter name must match {PARAM_NAME_PATTERN}",
                        "type": "extra_forbidden",
                    }
                )
            elif name not in self.parameters:
                errors.append(
                    {
                        "loc": ["body", "parameters", name],
                        "msg": f"unknown parameter (known: {', '.join(self.parameters) or 'none'})",
                        "type": "extra_forbidden",
                    }
                )
        for name, spec in self.parameters.items():
            if name not in values:
                if spec.default is None:
                    errors.append(
                        {
                            "loc": ["body", "parameters", name],
                            "msg": "required",
                            "type": "missing",
                        }
                    )
                else:
                    checked[name] = spec.default
                continue
            try:
                checked[name] = spec.check(values[name])
            except ValueError as exc:
                errors.append(
                    {"loc": ["body", "parameters", name], "msg": str(exc), "type": "value_error"}
                )
        if errors:
            raise ValidationFailed(f"invalid parameters for runbook {self.name}", errors=errors)
        return checked
