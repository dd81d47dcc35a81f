"""A log line cannot be forged: what a client sends (a path with ``%0a``, raw control
characters) stays on its request's line, in the text and the JSON format, with the
logging the command line sets up, for real requests to a live uvicorn."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from app.core.context import AppContext
from app.core.logging import LogFormat, configure_logging, escape
from app.main import create_app
from tests.helpers import live, raw_get

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
