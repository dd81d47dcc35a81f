"""What an audit event stores of a request: its summary, bounded in size, after the
secrets rule. The rule itself is :mod:`app.core.redaction`, the only place that decides
what is secret; this module only bounds what is kept."""

from __future__ import annotations

from typing import Any

from app.core.redaction import redact_value

_MAX_STRING = 500
_MAX_ITEMS = 50
_MAX_DEPTH = 6


def bounded_summary(value: Any) -> Any:
    """What an audit summary stores of ``value``: no secret, at most
    :data:`_MAX_ITEMS` items per level, :data:`_MAX_STRING` characters per string."""
    return _bounded(redact_value(value))


def _bounded(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, dict):
        return {
            str(key): _bounded(item, depth + 1) for key, item in list(value.items())[:_MAX_ITEMS]
        }
    if isinstance(value, list | tuple):
        return [_bounded(item, depth + 1) for item in list(value)[:_MAX_ITEMS]]
    if isinstance(value, str):
        return value if len(value) <= _MAX_STRING else value[:_MAX_STRING] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    return _bounded(redact_value(str(value)), depth + 1)
