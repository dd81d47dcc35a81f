"""From URLs to the things they name: a database URL to its :class:`Source`, a storage
URL to its :class:`Storage` (the implementations import the protocols, never the other
way round)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.backups.postgres import PostgresSource
from app.backups.sources import Source, SourceError
from app.backups.storage import FileStorage, Storage, StorageError


def engine_of(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme == "sqlite":
        return "sqlite"
    raise SourceError("a database URL is postgresql://… or sqlite:////absolute/path.db")


def source_for(url: str, *, pg_format: str = "custom", largest_tables: int = 10) -> Source:
    """The source a database URL names."""
    if engine_of(url) == "postgresql":
        return PostgresSource(url, format=pg_format, largest_tables=largest_tables)
    # sqlite3 stays out of the processes (PostgreSQL deployments) that never open a
    # SQLite database.
    from app.backups.sqlite import SqliteSource

    return SqliteSource(url, largest_tables=largest_tables)


def open_storage(
    url: str, *, s3_endpoint_url: str | None = None, part_size: int = 8 << 20
) -> Storage:
    """The storage a URL names: ``file:///abs/path`` or ``s3://bucket[/prefix]``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageError("a file:// storage URL names a local path (file:///path)")
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise StorageError("a file:// storage URL needs an absolute path")
        return FileStorage(path)
    if parts.scheme == "s3":
        # boto3 and botocore take about 9 MB of every process that imports them: only a
        # process that opens an S3 storage does.
        from app.backups.storage_s3 import S3Storage

        return S3Storage.from_url(url, endpoint_url=s3_endpoint_url, part_size=part_size)
    raise StorageError("a storage URL is file:///path or s3://bucket/prefix")
