"""Shared schema bases."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

# Printable text (no control characters): what identifiers and filters may contain.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339(value: object) -> object:
    """Only RFC 3339 text with a time zone: no epoch numbers, no naive local times."""
    if isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError(
            "expected an RFC 3339 timestamp with a time zone, e.g. 2026-01-31T12:00:00Z"
        )
    return value


Timestamp = Annotated[dt.datetime, BeforeValidator(_rfc3339)]
