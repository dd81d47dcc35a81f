"""Process-wide logging set-up for the command line.

One log record is one line, whatever a client sent: request paths, header values and
other client-supplied strings are escaped where they are logged (:func:`escape`), and
every handler set up here escapes control characters in any message as well, so a
``%0a`` in a URL cannot start a forged line.

``formula-ops api`` and ``worker`` write one JSON object per line, ``serve`` and the
other commands write text; ``FORMULA_OPS_LOG_FORMAT`` overrides both.

Every line says which request or run it belongs to: the request middleware, the
authentication dependency and the run engine set context variables
(:func:`log_context`), and :class:`ContextFilter` copies them onto each record
(``request_id``, ``actor``, ``run_id``, ``kind``, ``step``), in both formats.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import IO, Literal

from app.core.redaction import redact_text

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]

# C0 and C1 controls, DEL, Unicode line and paragraph separators; and the backslash,
# so an escaped sequence cannot be told apart from one the client wrote.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


# -- what a line belongs to ------------------------------------------------------------

CONTEXT_FIELDS = ("request_id", "actor", "run_id", "kind", "step")
_CONTEXT: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"formula_ops_log_{name}", default=None) for name in CONTEXT_FIELDS
}
# Structured details a lifecycle line passes with ``extra=``; written as JSON fields
# (in text they are already part of the message).
EXTRA_FIELDS = ("event", "status", "duration_ms", "attempt", "worker", "action", "environment")


@contextlib.contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Lines logged inside the block (in this task, and in tasks it starts) carry
    ``values``; each name is one of :data:`CONTEXT_FIELDS`."""
    tokens = [(_CONTEXT[name], _CONTEXT[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind_log_context(**values: str | None) -> None:
    """Set context fields until the current task (or its caller's :func:`log_context`)
    ends: for a dependency that learns the actor halfway through a request."""
    for name, value in values.items():
        _CONTEXT[name].set(value)


def current_log_context() -> dict[str, str]:
    return {name: value for name, var in _CONTEXT.items() if (value := var.get()) is not None}


class ContextFilter(logging.Filter):
    """Copies the context fields onto each record; a field passed with ``extra=`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


def _context_of(record: logging.LogRecord) -> dict[str, str]:
    fields = {}
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            # A step's name (or a client's request id) may carry a URL with its password;
            # the actor is ours (``token:<id>``), which the rule would take for a secret.
            text_value = str(value) if name == "actor" else redact_text(str(value))
            fields[name] = escape(text_value)
    return fields


class TextFormatter(logging.Formatter):
    """The classic line, then the context fields compactly in brackets:
    ``... app.runs.engine: step ended [run_id=... kind=deployment step=1:pull]``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _context_of(record)
        if not fields:
            return line
        suffix = " [" + " ".join(f"{k}={_quoted(v)}" for k, v in fields.items()) + "]"
        head, newline, traceback = line.partition("\n")
        return head + suffix + newline + traceback


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if _NEEDS_QUOTES.search(value) else value


_NEEDS_QUOTES = re.compile(r'[\s"\[\]=]|^$')


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
        entry.update(_context_of(record))
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = redact_text(value) if isinstance(value, str) else value
        if record.exc_text:  # RedactingFilter leaves the redacted traceback here
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: LogFormat = "text", *, with_pid: bool = False) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(with_pid=with_pid)
    if with_pid:  # which worker process said it
        return TextFormatter(FORMAT.replace("%(name)s:", "%(name)s[%(process)d]:"))
    return TextFormatter(FORMAT)


def log_handler(
    stream: IO[str] | None = None, log_format: LogFormat = "text", *, with_pid: bool = False
) -> logging.Handler:
    """The handler every process logs through (to stderr by default): secrets taken out
    first (:class:`RedactingFilter`), then each record kept on one line (:class:`OneLine`),
    with the request or run it belongs to (:class:`ContextFilter`)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format, with_pid=with_pid))
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.addFilter(OneLine())
    return handler


# Never below INFO: redis-py's debug chatter, and aiosqlite's, which logs every
# statement with its parameter values (secrets among them; see ``hide_parameters``).
QUIETED_LOGGERS = ("redis", "aiosqlite")
# One INFO line per HTTP request they make or serve (every health-check probe, every
# webhook): at WARNING unless the level is DEBUG. Our own lines say what matters.
PER_REQUEST_LOGGERS = ("httpx", "httpcore", "uvicorn.access")


def configure_logging(
    level: str,
    log_format: LogFormat = "text",
    *,
    with_pid: bool = False,
    handler: logging.Handler | None = None,
) -> None:
    handler = handler or log_handler(log_format=log_format, with_pid=with_pid)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # arq's per-job lines are filtered by the worker (workers.main.quiet_job_logs).
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.getLevelName(level), logging.INFO))
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level == "DEBUG" else max(logging.getLevelName(level), logging.WARNING)
        )
