"""The ``config`` of a service run by the ``process`` driver (:class:`ProcessConfig`;
its meaning is in :mod:`app.drivers.process`). The API validates service configs with
it without loading the driver."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from app.core.schemas import CONTROL, CONTROL_BUT_TAB_NEWLINE, MULTILINE, MULTILINE_NOTE, PRINTABLE

DEFAULT_STOP_TIMEOUT_SECONDS = 10.0


# Constraints a JSON schema can state too, so the API's documented schema and this
# model accept the same configs.
# The text rule of app.core.schemas (argv may hold tab and newline, and one character that
# is not a space); bounded so that a request body at every limit stays under the API's
# body size limit.
Argument = Annotated[
    str,
    StringConstraints(
        pattern=rf"^[^{CONTROL_BUT_TAB_NEWLINE}]*[^{CONTROL} ][^{CONTROL_BUT_TAB_NEWLINE}]*$",
        max_length=512,
    ),
]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, StringConstraints(pattern=MULTILINE, max_length=1024)]


_NO_PORT_PLACEHOLDER: JsonDict = {"not": {"pattern": "[{]port[}]"}}


class ProcessConfig(BaseModel):
    """The ``config`` of a service run by the ``process`` driver."""

    model_config = ConfigDict(
        extra="forbid",
        # `{port}` needs a port: the rule of `_port_placeholder`, stated in the schema.
        json_schema_extra={
            "if": {"required": ["port"], "properties": {"port": {"type": "integer"}}},
            "else": {
                "properties": {
                    "command": {"items": _NO_PORT_PLACEHOLDER},
                    "env": {"additionalProperties": _NO_PORT_PLACEHOLDER},
                }
            },
        },
    )

    command: list[Argument] = Field(
        min_length=1,
        max_length=50,
        description="argv (no shell); placeholders {version} {port} {service} {environment} "
        "{python}. " + MULTILINE_NOTE,
    )
    env: dict[EnvName, EnvValue] = Field(
        default_factory=dict, max_length=50, description=MULTILINE_NOTE
    )
    cwd: (
        Annotated[str, StringConstraints(min_length=1, pattern=PRINTABLE, max_length=1024)] | None
    ) = None
    port: int | None = Field(default=None, ge=1, le=65535)
    stop_timeout_seconds: float = Field(default=DEFAULT_STOP_TIMEOUT_SECONDS, gt=0, le=3600)

    @model_validator(mode="after")
    def _port_placeholder(self) -> ProcessConfig:
        if self.port is None and any(
            "{port}" in text for text in [*self.command, *self.env.values()]
        ):
            raise ValueError("{port} is used but no port is set")
        return self
