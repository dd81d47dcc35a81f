"""Process-wide logging set-up for the command line."""

from __future__ import annotations

import logging
from typing import IO

from app.redaction import redact_text

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Applies the secrets rule (:func:`app.redaction.redact_text`) to every record a
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


def log_handler(stream: IO[str] | None = None) -> logging.Handler:
    """The handler every process logs through (to stderr by default)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactingFilter())
    return handler


# Never below INFO: redis-py's debug chatter, and aiosqlite's, which logs every
# statement with its parameter values (secrets among them; see ``hide_parameters``).
QUIETED_LOGGERS = ("redis", "aiosqlite")


def configure_logging(level: str, *, handler: logging.Handler | None = None) -> None:
    logging.basicConfig(level=level, handlers=[handler or log_handler()], force=True)
    # arq logs every job start and end at INFO; keep that.
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.getLevelName(level), logging.INFO))
