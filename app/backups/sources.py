"""What is backed up: a database, dumped as a stream and restored into a scratch
database (a drill) or over its target (a restore).

A :class:`Source` is built from a connection URL (:func:`source_for`):
``postgresql://user:password@host:port/name`` (:mod:`app.backups.postgres`: ``pg_dump``
and ``pg_restore``/``psql``, the password only in the child's environment) or
``sqlite:///abs/path.db`` (:mod:`app.backups.sqlite`: the online backup API).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from app.backups.base import Dump, LogLine, Scratch, Source, SourceError

__all__ = ["Dump", "LogLine", "Scratch", "Source", "SourceError", "engine_of", "source_for"]


def engine_of(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme == "sqlite":
        return "sqlite"
    raise SourceError("a database URL is postgresql://… or sqlite:///path")


def source_for(url: str, *, pg_format: str = "custom", largest_tables: int = 10) -> Source:
    """The source a database URL names."""
    if engine_of(url) == "postgresql":
        from app.backups.postgres import PostgresSource

        return PostgresSource(url, format=pg_format, largest_tables=largest_tables)
    from app.backups.sqlite import SqliteSource

    return SqliteSource(url, largest_tables=largest_tables)
