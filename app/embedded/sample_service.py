"""A tiny sample web service to try deployments with: ``python -m app.embedded.sample_service``.

Standard library only. Configuration from the environment, overridden by arguments:

* ``PORT`` / ``--port`` (default 8080), ``HOST`` / ``--host`` (default 127.0.0.1)
* ``SERVICE_VERSION`` / ``--version`` (default ``0.0.0``)
* ``SERVICE_NAME`` / ``--name`` (default ``sample``)
* ``SERVICE_ENVIRONMENT`` (set by the ``process`` driver): the ``environment`` label of
  the metrics
* ``ERROR_PERCENT`` / ``--error-percent`` (0 to 100): the share of requests answered 500
  (default 20 for a version ending with ``-errors``, else 0)

Endpoints:

* ``GET /health``: 200 ``{"status": "ok", "service": ..., "version": ...}``
* ``GET /``: 200 ``{"service": ..., "version": ...}``
* ``GET /version``: the version as ``text/plain``
* ``GET /metrics``: Prometheus text format: ``http_requests_total`` (a counter by
  ``status``) and ``http_request_duration_seconds`` (a histogram), both labelled with
  ``service`` (and ``environment`` when set); requests to ``/health`` and ``/metrics``
  are not counted
* anything else: 404 JSON

**A version ending with ``-errors`` (e.g. ``1.3.0-errors``) answers 500 to one request in
five** (evenly spread, not at random: every fifth request), its ``/health`` staying
healthy: deploy such a version to a service with a ``metrics_url`` (or a Prometheus
scraping it) to see post-deployment verification fail on the error-rate threshold and
roll the deployment back.

**A version ending with ``-broken`` (e.g. ``1.2.0-broken``) answers ``/health`` with 503
``{"status": "broken", ...}``**: deploy such a version to see a failing deployment and its
rollback. The process itself keeps running; only its health check fails.

SIGTERM and SIGINT stop the server cleanly (exit code 0). One short access log line per
request goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

BROKEN_SUFFIX = "-broken"
ERRORS_SUFFIX = "-errors"
ERRORS_PERCENT = 20.0
# The upper bounds (seconds) of the request duration histogram's buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNCOUNTED = frozenset({"/health", "/metrics"})


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Request counters by status and a duration histogram (thread-safe), and which
    request answers 500: request ``n`` does when ``floor(n * p / 100)`` grows, so the
    errors are spread evenly and any run of requests holds the configured share."""

    def __init__(self, error_percent: float) -> None:
        self.error_percent = error_percent
        self._lock = threading.Lock()
        self._served = 0
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * len(BUCKETS)
        self.count = 0
        self.sum = 0.0

    def fails_next(self) -> bool:
        with self._lock:
            self._served += 1
            n, p = self._served, self.error_percent
            return math.floor(n * p / 100) > math.floor((n - 1) * p / 100)

    def observe(self, status: int, seconds: float) -> None:
        with self._lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1
            self.count += 1
            self.sum += seconds
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1

    def render(self, labels: dict[str, str]) -> bytes:
        base = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines = [
            "# HELP http_requests_total Requests answered, by status code.",
            "# TYPE http_requests_total counter",
        ]
        with self._lock:
            for status, count in sorted(self.by_status.items()):
                lines.append(f'http_requests_total{{{base},status="{status}"}} {count}')
            lines += [
                "# HELP http_request_duration_seconds Time to answer a request.",
                "# TYPE http_request_duration_seconds histogram",
            ]
            for bound, count in zip(BUCKETS, self.buckets, strict=True):
                lines.append(f'http_request_duration_seconds_bucket{{{base},le="{bound}"}} {count}')
            lines.append(f'http_request_duration_seconds_bucket{{{base},le="+Inf"}} {self.count}')
            lines.append(f"http_request_duration_seconds_sum{{{base}}} {self.sum:.6f}")
            lines.append(f"http_request_duration_seconds_count{{{base}}} {self.count}")
        return ("\n".join(lines) + "\n").encode()


class _Stop(Exception):
    """Raised by the signal handler to leave ``serve_forever``."""


class SampleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        service: str,
        version: str,
        *,
        error_percent: float | None = None,
        environment: str = "",
    ) -> None:
        super().__init__(address, SampleHandler)
        self.service = service
        self.version = version
        if error_percent is None:
            error_percent = ERRORS_PERCENT if version.endswith(ERRORS_SUFFIX) else 0.0
        self.metrics = Metrics(error_percent)
        self.labels = {"service": service, **({"environment": environment} if environment else {})}


class SampleHandler(BaseHTTPRequestHandler):
    server: SampleServer
    server_version = "formula-ops-sample"
    sys_version = ""

    def do_GET(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        if path in UNCOUNTED:
            self._answer(path)
            return
        status = self._answer(path)
        self.server.metrics.observe(status, time.perf_counter() - started)

    def _answer(self, path: str) -> int:
        service, version = self.server.service, self.server.version
        if path == "/metrics":
            payload = self.server.metrics.render(self.server.labels)
            return self._send(200, "text/plain; version=0.0.4; charset=utf-8", payload)
        if path != "/health" and self.server.metrics.fails_next():
            return self._json(500, {"error": "injected failure", "version": version})
        if path == "/health":
            if version.endswith(BROKEN_SUFFIX):
                return self._json(503, {"status": "broken", "service": service, "version": version})
            return self._json(200, {"status": "ok", "service": service, "version": version})
        if path == "/":
            return self._json(200, {"service": service, "version": version})
        if path == "/version":
            return self._send(200, "text/plain; charset=utf-8", version.encode() + b"\n")
        return self._json(404, {"error": "not found", "path": path})

    def _json(self, status: int, body: dict[str, Any]) -> int:
        return self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, payload: bytes) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        return status

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
        description="Sample web service (a version ending with -broken fails /health; "
        "one ending with -errors answers 500 to one request in five).",
    )
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--version", default=os.environ.get("SERVICE_VERSION", "0.0.0"))
    parser.add_argument("--name", default=os.environ.get("SERVICE_NAME", "sample"))
    error_percent = os.environ.get("ERROR_PERCENT")
    parser.add_argument(
        "--error-percent",
        type=_percent,
        default=_percent(error_percent) if error_percent else None,
        help="share of requests answered 500 (default: 20 for a version ending with -errors)",
    )
    args = parser.parse_args(argv)
    args.environment = os.environ.get("SERVICE_ENVIRONMENT", "")
    return args


def _percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 100")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    server = SampleServer(
        (args.host, args.port),
        args.name,
        args.version,
        error_percent=args.error_percent,
        environment=args.environment,
    )
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
