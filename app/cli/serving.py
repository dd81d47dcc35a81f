"""uvicorn as the servers of ``serve`` and ``api`` run it (:mod:`app.cli.server`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from app.core.settings import Settings


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` stops it together with the worker."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# Logging is ours (requests are logged by path, never with their query string).
UVICORN_OPTIONS: dict[str, Any] = {
    # Open event streams and long polls end after this many seconds of shutting down.
    "timeout_graceful_shutdown": 5,
    "log_config": None,
    "access_log": False,
    # X-Forwarded-For is believed only from FORMULA_OPS_TRUSTED_PROXIES (app/core/proxies.py).
    "proxy_headers": False,
    "server_header": False,
}


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(app, host=settings.host, port=settings.port, **UVICORN_OPTIONS)
