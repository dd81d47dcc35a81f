"""Fixtures of the backup tests."""

from tests.backups.s3_server import moto_s3, rgw_s3  # noqa: F401
