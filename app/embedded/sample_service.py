"""A tiny sample web service to try deployments with: ``python -m app.embedded.sample_service``.

Standard library only. Configuration from the environment, overridden by arguments:

* ``PORT`` / ``--port`` (default 8080), ``HOST`` / ``--host`` (default 127.0.0.1)
* ``SERVICE_VERSION`` / ``--version`` (default ``0.0.0``)
* ``SERVICE_NAME`` / ``--name`` (default ``sample``)

Endpoints:

* ``GET /health``: 200 ``{"status": "ok", "service": ..., "version": ...}``
* ``GET /``: 200 ``{"service": ..., "version": ...}``
* ``GET /version``: the version as ``text/plain``
* anything else: 404 JSON

**A version ending with ``-broken`` (e.g. ``1.2.0-broken``) answers ``/health`` with 503
``{"status": "broken", ...}``**: deploy such a version to see a failing deployment and its
rollback. The process itself keeps running; only its health check fails.

SIGTERM and SIGINT stop the server cleanly (exit code 0). One short access log line per
request goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

BROKEN_SUFFIX = "-broken"


class _Stop(Exception):
    """Raised by the signal handler to leave ``serve_forever``."""


class SampleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: str, version: str) -> None:
        super().__init__(address, SampleHandler)
        self.service = service
        self.version = version


class SampleHandler(BaseHTTPRequestHandler):
    server: SampleServer
    server_version = "formula-ops-sample"
    sys_version = ""

    def do_GET(self) -> None:
        service, version = self.server.service, self.server.version
        path = self.path.split("?", 1)[0]
        if path == "/health":
            if version.endswith(BROKEN_SUFFIX):
                self._json(503, {"status": "broken", "service": service, "version": version})
            else:
                self._json(200, {"status": "ok", "service": service, "version": version})
        elif path == "/":
            self._json(200, {"service": service, "version": version})
        elif path == "/version":
            self._send(200, "text/plain; charset=utf-8", version.encode() + b"\n")
        else:
            self._json(404, {"error": "not found", "path": path})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        code_text = code.value if isinstance(code, HTTPStatus) else code
        path = self.path.split("?", 1)[0] if hasattr(self, "path") else "-"
        method = getattr(self, "command", None) or "-"
        _stderr(f"{self.client_address[0]} {method} {path} {code_text}")

    def log_message(self, format: str, *args: Any) -> None:
        _stderr(f"{self.client_address[0]} {format % args}")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.embedded.sample_service",
        description="Sample web service (a version ending with -broken fails /health).",
    )
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--version", default=os.environ.get("SERVICE_VERSION", "0.0.0"))
    parser.add_argument("--name", default=os.environ.get("SERVICE_NAME", "sample"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    server = SampleServer((args.host, args.port), args.name, args.version)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    _stderr(f"{args.name} {args.version} listening on http://{host!s}:{port}")
    try:
        server.serve_forever()
    except _Stop as exc:
        _stderr(f"{args.name} {args.version} stopping ({exc})")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
