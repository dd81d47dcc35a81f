"""Request summaries for the audit trail, with secrets taken out."""

from __future__ import annotations

import re
from typing import Any

from app.auth.secrets import looks_like_token

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(secret|token|password|passwd|authorization|api[_-]?key|credential|private|signature)",
    re.IGNORECASE,
)
_MAX_STRING = 500
_MAX_ITEMS = 50
_MAX_DEPTH = 6


def redact(value: Any, depth: int = 0) -> Any:
    """A bounded copy of ``value`` where secret-looking keys and token-like strings are
    replaced; applied to everything that goes into an audit summary."""
    if depth > _MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in list(value.items())[:_MAX_ITEMS]:
            name = str(key)
            out[name] = REDACTED if _SECRET_KEY.search(name) else redact(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [redact(item, depth + 1) for item in list(value)[:_MAX_ITEMS]]
    if isinstance(value, str):
        if looks_like_token(value) or value.startswith("whsec_"):
            return REDACTED
        return value if len(value) <= _MAX_STRING else value[:_MAX_STRING] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value), depth + 1)
