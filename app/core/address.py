"""Where the server listens by default (``Settings.host``/``port``), apart from the
settings: the command line's client finds the server of this host without loading them."""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
