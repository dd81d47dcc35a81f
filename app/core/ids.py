"""Opaque, sortable identifiers (UUIDv7 as text)."""

from __future__ import annotations

import uuid6


def new_id() -> str:
    """A new UUIDv7 string: ids created later sort after earlier ones."""
    return str(uuid6.uuid7())
