"""Process-wide logging set-up for the command line."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=FORMAT, force=True)
    # arq logs every job start and end at INFO; keep that, but not redis-py's debug chatter.
    logging.getLogger("redis").setLevel(max(logging.getLevelName(level), logging.INFO))
