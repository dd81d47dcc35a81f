"""S3 storage (being written)."""

from __future__ import annotations

from app.backups.storage import StorageError


class S3Storage:
    @classmethod
    def from_url(
        cls, url: str, *, endpoint_url: str | None = None, part_size: int = 8 << 20
    ) -> S3Storage:
        raise StorageError("S3 storage is not available in this build yet")
