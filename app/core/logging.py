"""Process-wide logging set-up for the command line.

One log record is one line, whatever a client sent: request paths, header values and
other client-supplied strings are escaped where they are logged (:func:`escape`), and
every handler set up here escapes control characters in any message as well, so a
``%0a`` in a URL cannot start a forged line. ``FORMULA_OPS_LOG_FORMAT=json`` writes one
JSON object per line instead of text.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import IO, Literal

from app.core.redaction import redact_text

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]

# C0 and C1 controls, DEL, Unicode line and paragraph separators; and the backslash,
# so an escaped sequence cannot be told apart from one the client wrote.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class RedactingFilter(logging.Filter):
    """Applies the secrets rule (:func:`app.core.redaction.redact_text`) to every record a
    handler writes: its message with its arguments, and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: object) -> str:
    """``text`` on one line: control characters and backslashes written as escapes."""
    return _UNSAFE.sub(_escape_char, str(text))


class OneLine(logging.Filter):
    """Escapes a message that holds control characters (a client's string that reached
    a log call unescaped); tracebacks, appended by the formatter, keep their lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _CONTROL.search(message):
            record.msg, record.args = escape(message), None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback)."""

    def __init__(self, *, with_pid: bool = False) -> None:
        super().__init__()
        self.with_pid = with_pid

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.with_pid:
            entry["pid"] = record.process
        if record.exc_text:  # RedactingFilter leaves the redacted traceback here
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: LogFormat = "text", *, with_pid: bool = False) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(with_pid=with_pid)
    if with_pid:  # which worker process said it
        return logging.Formatter(FORMAT.replace("%(name)s:", "%(name)s[%(process)d]:"))
    return logging.Formatter(FORMAT)


def log_handler(
    stream: IO[str] | None = None, log_format: LogFormat = "text", *, with_pid: bool = False
) -> logging.Handler:
    """The handler every process logs through (to stderr by default): secrets taken out
    first (:class:`RedactingFilter`), then each record kept on one line (:class:`OneLine`)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format, with_pid=with_pid))
    handler.addFilter(RedactingFilter())
    handler.addFilter(OneLine())
    return handler


# Never below INFO: redis-py's debug chatter, and aiosqlite's, which logs every
# statement with its parameter values (secrets among them; see ``hide_parameters``).
QUIETED_LOGGERS = ("redis", "aiosqlite")


def configure_logging(
    level: str,
    log_format: LogFormat = "text",
    *,
    with_pid: bool = False,
    handler: logging.Handler | None = None,
) -> None:
    handler = handler or log_handler(log_format=log_format, with_pid=with_pid)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # arq logs every job start and end at INFO; keep that.
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.getLevelName(level), logging.INFO))
