"""A log line cannot be forged: what a client sends (a path with ``%0a``, raw control
characters) stays on its request's line, in the text and the JSON format, with the
logging the command line sets up, for real requests to a live uvicorn."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from app.auth.roles import Role
from app.core.context import AppContext
from app.core.logging import (
    CONTEXT_FIELDS,
    PER_REQUEST_LOGGERS,
    LogFormat,
    bind_log_context,
    configure_logging,
    escape,
    log_context,
    log_handler,
)
from app.main import create_app
from tests.factories import issue_token
from tests.helpers import live, raw_get
from workers.main import quiet_job_logs

FORGED = "2026-12-02 00:00:00,000 INFO app.requests: GET /v1/tokens 200 request_id=forged"
ATTACKS = [
    # the forged line after an encoded LF, CR LF, an ANSI escape, a Unicode line separator
    "/v1/nothing%0a" + FORGED.replace(" ", "%20"),
    "/v1/nothing%0d%0a" + FORGED.replace(" ", "%20"),
    "/v1/nothing%1b[2K%0d" + FORGED.replace(" ", "%20"),
    "/v1/nothing%e2%80%a8" + FORGED.replace(" ", "%20"),
    "/v1/nothing%5cn" + FORGED.replace(" ", "%20"),  # a backslash and an n
]
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+: ")


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[LogFormat, io.StringIO]]:
    """The logging ``formula-ops api`` sets up, writing to a buffer; restored after."""
    log_format: LogFormat = request.param
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    configure_logging("INFO", log_format)
    for handler in root.handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
    try:
        yield log_format, buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.parametrize("captured", ["text", "json"], indirect=True)
async def test_client_strings_cannot_start_a_log_line(
    context: AppContext, captured: tuple[LogFormat, io.StringIO]
) -> None:
    log_format, buffer = captured
    async with live(create_app(context.settings, context=context), context) as url:
        for path in ATTACKS:
            assert await raw_get(url, path, {}) == 404
    logging.getLogger("tests").warning("a raw %s", "line\nbreak\r\x00\u2028end")
    output = buffer.getvalue()
    assert "\u2028" not in output
    assert "\r" not in output
    lines = output.splitlines()
    if log_format == "json":
        entries = [json.loads(line) for line in lines]  # every line is one whole record
        messages = [e["message"] for e in entries]
    else:
        assert all(TEXT_LINE.match(line) for line in lines), output
        messages = [TEXT_LINE.sub("", line) for line in lines]
    requests = [m for m in messages if m.startswith("GET /v1/nothing")]
    assert len(requests) == len(ATTACKS)
    assert not any(m.startswith("GET /v1/tokens") for m in messages)
    assert requests[0].startswith("GET /v1/nothing\\n2026-12-02 00:00:00,000 INFO")
    assert requests[1].startswith("GET /v1/nothing\\r\\n2026")
    assert requests[2].startswith("GET /v1/nothing\\x1b[2K\\r2026")
    assert requests[3].startswith("GET /v1/nothing\\u20282026")
    assert requests[4].startswith("GET /v1/nothing\\\\n2026")  # not taken for an escape
    assert "a raw line\\nbreak\\r\\x00\\u2028end" in messages


def test_escape() -> None:
    assert escape("plain /v1/x?y=ü") == "plain /v1/x?y=ü"
    assert escape("a\nb\tc\\d\x7f\x85") == "a\\nb\\tc\\\\d\\x7f\\x85"


@pytest.mark.parametrize("captured", ["text", "json"], indirect=True)
async def test_request_lines_carry_the_request_id_and_the_actor(
    context: AppContext, captured: tuple[LogFormat, io.StringIO]
) -> None:
    """The actor is the token's id, never the token; the context ends with the request."""
    log_format, buffer = captured
    token = await issue_token(context, Role.VIEWER)
    async with (
        live(create_app(context.settings, context=context), context) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        headers = {**token.headers, "X-Request-ID": "req-42"}
        assert (await http.get("/v1/runs", headers=headers)).status_code == 200
        assert (await http.get("/health", headers={"X-Request-ID": "req-43"})).status_code == 200
    logging.getLogger("tests").info("after the requests")
    output = buffer.getvalue()
    assert token.value not in output
    lines = output.splitlines()
    if log_format == "json":
        entries = {e["message"].split(" ")[1]: e for e in map(json.loads, lines)}
        assert entries["/v1/runs"]["request_id"] == "req-42"
        assert entries["/v1/runs"]["actor"] == f"token:{token.id}"
        assert entries["/v1/runs"]["status"] == 200
        assert entries["/health"]["request_id"] == "req-43"
        assert "actor" not in entries["/health"]  # the last request's actor is gone
        assert "request_id" not in json.loads(lines[-1])
    else:
        runs = next(line for line in lines if "GET /v1/runs 200" in line)
        assert runs.endswith(f"[request_id=req-42 actor=token:{token.id}]"), runs
        health = next(line for line in lines if "GET /health 200" in line)
        assert health.endswith("[request_id=req-43]"), health
        assert lines[-1].endswith("after the requests")


def test_run_fields_in_both_formats() -> None:
    """What the run engine binds (run id, kind, actor, step), compactly in text."""
    for log_format in ("text", "json"):
        buffer = io.StringIO()
        handler = log_handler(buffer, log_format)
        record_logger = logging.getLogger(f"tests.run_fields.{log_format}")
        record_logger.addHandler(handler)
        record_logger.propagate = False
        try:
            with log_context(run_id="r1", kind="deployment", actor="token:abc", step=None):
                bind_log_context(step="1:pull backend")
                record_logger.warning(
                    "step ended", extra={"event": "step.finished", "duration_ms": 12.5}
                )
            record_logger.warning("outside")
        finally:
            record_logger.removeHandler(handler)
        first, second = buffer.getvalue().splitlines()
        if log_format == "json":
            entry = json.loads(first)
            assert entry["run_id"] == "r1"
            assert entry["kind"] == "deployment"
            assert entry["actor"] == "token:abc"
            assert entry["step"] == "1:pull backend"
            assert entry["event"] == "step.finished"
            assert entry["duration_ms"] == 12.5
            assert not set(CONTEXT_FIELDS) & set(json.loads(second))
        else:
            assert first.endswith(
                ' step ended [actor=token:abc run_id=r1 kind=deployment step="1:pull backend"]'
            ), first
            assert second.endswith(": outside"), second


class _Quiet(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("level", "logged"), [("INFO", False), ("DEBUG", True)])
async def test_probe_requests_are_not_logged_at_info(level: str, logged: bool) -> None:
    """httpx logs every request it makes at INFO (every health-check probe); the logging
    the command line sets up keeps those lines for DEBUG."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    configure_logging(level, "json", handler=log_handler(buffer, "json"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{server.server_address[1]}/probe")
            assert response.status_code == 204
    finally:
        server.shutdown()
        server.server_close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        configure_logging_levels_reset()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    probes = [e for e in lines if e["logger"] == "httpx" and "/probe" in e["message"]]
    assert bool(probes) is logged, lines


def configure_logging_levels_reset() -> None:
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_context_and_extra_fields_are_redacted(log_format: LogFormat) -> None:
    """A step's name (``backup <database>``) or an extra field may hold a URL with its
    password: the secrets rule applies to them as to the message."""
    buffer = io.StringIO()
    handler = log_handler(buffer, log_format)
    record_logger = logging.getLogger(f"tests.context_redaction.{log_format}")
    record_logger.addHandler(handler)
    record_logger.propagate = False
    try:
        with log_context(step="0:backup postgresql://admin:hunter2@db/app"):
            record_logger.warning(
                "step started", extra={"environment": "https://u:sekret-pw@example.test/x"}
            )
    finally:
        record_logger.removeHandler(handler)
    line = buffer.getvalue()
    assert "hunter2" not in line, line
    assert "sekret-pw" not in line, line
    assert "postgresql://[redacted]@db/app" in line, line
    if log_format == "json":  # text lines carry the context fields, not the extra ones
        assert json.loads(line)["environment"] == "https://[redacted]@example.test/x"


def test_arq_lines_about_a_run_job_carry_the_run_id() -> None:
    """arq logs a job's retry or failure after the job's own context ended."""
    run_id = "01a235be-aace-78c3-9e95-e641711f1581"
    quiet_job_logs("INFO")
    arq_logger = logging.getLogger("arq.worker")
    buffer = io.StringIO()
    handler = log_handler(buffer, "json")
    arq_logger.addHandler(handler)
    try:
        arq_logger.warning("%6.2fs ! %s max retries %d exceeded", 1.0, f"{run_id}:2:execute_run", 5)
        arq_logger.warning("job %s expired", run_id)
        arq_logger.info("%6.2fs ← %s ● %s", 0.1, f"{run_id}:execute_run", "")  # dropped
        arq_logger.warning("recording health: %s", "x")
    finally:
        arq_logger.removeHandler(handler)
    entries = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [e.get("run_id") for e in entries] == [run_id, run_id, None]
