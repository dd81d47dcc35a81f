"""PostgreSQL databases (being written: dump with ``pg_dump``, restore with
``pg_restore``/``psql``)."""

from __future__ import annotations

from app.backups.sources import SourceError


class PostgresSource:
    engine = "postgresql"

    def __init__(self, url: str, *, format: str = "custom", largest_tables: int = 10) -> None:
        raise SourceError("PostgreSQL backups are not available in this build yet")
