"""Shared schema bases, and the rules for the text and timestamps requests carry."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    WithJsonSchema,
)

# One rule for every string a request carries (body, query, path, a stored header):
# control characters are refused with a 422. That is C0 (PostgreSQL cannot store NUL,
# the others forge log lines and terminal output), DEL and C1 (U+0085 ends a line for
# Python). Only fields whose description says so (MULTILINE_NOTE) take tab and newline.
# Each rule is a pattern, so the OpenAPI document states it for clients and fuzzers;
# none uses `\s` or other classes whose meaning differs between regex dialects.
CONTROL = r"\x00-\x1f\x7f-\x9f"
CONTROL_BUT_TAB_NEWLINE = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
PRINTABLE = rf"^[^{CONTROL}]*$"
MULTILINE = rf"^[^{CONTROL_BUT_TAB_NEWLINE}]*$"
HTTP_URL = rf"^https?://[^{CONTROL} ]+$"
MULTILINE_NOTE = "Tab and newline are allowed, other control characters are not."

Printable = Annotated[str, StringConstraints(pattern=PRINTABLE)]
Multiline = Annotated[str, StringConstraints(pattern=MULTILINE)]

_PRINTABLE = re.compile(PRINTABLE)


def is_printable(text: str) -> bool:
    """Whether ``text`` holds no control character (for text decoded from opaque values)."""
    return _PRINTABLE.match(text) is not None


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
)
# A timestamp whose instant could fall outside years 1-9999 in UTC: on 0001-01-01 one
# ahead of UTC, on 9999-12-31 one behind it. Stated as a pattern for the schema, and
# checked with the same pattern here, so both refuse exactly the same texts.
IN_UTC_RANGE = (
    r"^(?!0001-01-01[Tt ][^+]*\+(?!00:00))"
    r"(?!9999-12-31[Tt ][^+]*-(?!00:00)[0-9]{2}:[0-9]{2}$)"
)
_IN_UTC_RANGE = re.compile(IN_UTC_RANGE)
_OUT_OF_RANGE = (
    "out of range: in UTC a timestamp must lie within years 1 to 9999 (no offset ahead of "
    "UTC on 0001-01-01, none behind it on 9999-12-31)"
)


def _rfc3339(value: object) -> object:
    """Only RFC 3339 text with a time zone: no epoch numbers, no naive local times."""
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError(
            "expected an RFC 3339 timestamp with a time zone, e.g. 2026-01-31T12:00:00Z"
        )
    if not _IN_UTC_RANGE.match(value):
        raise ValueError(_OUT_OF_RANGE)
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(_OUT_OF_RANGE) from None


Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(_rfc3339),
    AfterValidator(_utc),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": IN_UTC_RANGE}),
]
"""An RFC 3339 timestamp with a time zone, as UTC; out of range is a 422, not an overflow."""
