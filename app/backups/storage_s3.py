"""Backups in S3 (``s3://bucket[/prefix]``): AWS or an S3-compatible server (Ceph RGW,
MinIO) named by ``FORMULA_OPS_S3_ENDPOINT_URL``.

An object is written as a multipart upload: parts of ``part_size`` bytes are sent while
the caller streams (memory stays at about one part) and the object appears under its key
only when the upload is completed. An interrupted writer leaves a multipart upload, named
by its upload id, which :meth:`S3Storage.abort_partial` removes and
:meth:`S3Storage.partials` finds.

Credentials come from boto3's usual chain (``AWS_*`` variables, shared files, instance
roles) unless given explicitly; they never appear in a :class:`StorageError`.
boto3 is synchronous: each call runs in a thread (one client per storage; boto3 clients
are thread-safe).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from urllib3.exceptions import HTTPError as Urllib3Error

from app.backups.storage import CHUNK, ObjectWriter, Partial, StorageError, check_key

MIB = 1 << 20
MIN_PART_SIZE = 5 * MIB  # S3's smallest part (but the last)
MAX_PART_SIZE = 5 * 1024 * MIB
DEFAULT_PART_SIZE = 8 * MIB
MAX_PARTS = 10_000
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# What a server's error message must not be echoed with (a URL may carry a signature).
_UNSAFE_MESSAGE = re.compile(r"https?://|X-Amz-|Signature|Credential", re.IGNORECASE)

T = TypeVar("T")


def _client_config() -> Config:
    return Config(
        connect_timeout=10,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 5},
        # Checksums only where the API demands them: S3-compatible servers (Ceph RGW,
        # older MinIO) refuse the streaming checksum trailers of recent boto3; the caller
        # hashes what it stores and reads it back to verify.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


class S3Storage:
    """Objects under ``prefix`` in an S3 bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
    ) -> None:
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise StorageError(f"not a valid S3 bucket name: {bucket!r}")
        if prefix:
            check_key(prefix)
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise StorageError(
                f"the S3 part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes"
            )
        if endpoint_url:
            endpoint = urlsplit(endpoint_url)
            if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
                raise StorageError("the S3 endpoint URL is http(s)://host[:port]")
            if endpoint.username is not None or endpoint.password is not None:
                raise StorageError("the S3 endpoint URL carries no credentials")
        if (access_key is None) != (secret_key is None):
            raise StorageError("give both an S3 access key and a secret key, or neither")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        # Path-style addressing for S3-compatible servers (no wildcard DNS needed).
        config = _client_config()
        if endpoint_url:
            config = config.merge(Config(s3={"addressing_style": "path"}))
        self._secrets = tuple(value for value in (access_key, secret_key) if value)
        self._client_options: dict[str, Any] = {
            "endpoint_url": endpoint_url or None,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "region_name": region,
            "config": config,
        }
        self._client_lock = threading.Lock()
        self._client_made: Any = None

    def _client(self) -> Any:
        """The storage's one boto3 client, made on first use in a worker thread (making
        it reads the service model and resolves credentials: too slow for the event
        loop)."""
        with self._client_lock:
            if self._client_made is None:
                try:
                    self._client_made = boto3.session.Session().client("s3", **self._client_options)
                except ValueError as error:  # botocore: an invalid endpoint or region
                    raise StorageError(f"no S3 client for {self.url}: {error}") from None
            return self._client_made

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        endpoint_url: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
    ) -> S3Storage:
        """The storage of ``s3://bucket[/prefix]`` (credentials stay out of the URL)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StorageError("an S3 storage URL is s3://bucket[/prefix]")
        if "@" in parts.netloc or ":" in parts.netloc:
            raise StorageError(
                "an S3 storage URL names a bucket only (credentials come from AWS_* variables)"
            )
        if parts.query or parts.fragment:
            raise StorageError("an S3 storage URL has no query or fragment")
        prefix = parts.path.strip("/")
        if parts.path.rstrip("/") != ("/" + prefix if prefix else ""):
            raise StorageError(f"not a valid S3 prefix: {parts.path!r}")
        return cls(
            parts.netloc,
            prefix,
            endpoint_url=endpoint_url,
            part_size=part_size,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
        )

    # -- helpers ------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, operation: str, key: str | None, error: Exception) -> StorageError:
        """A :class:`StorageError` that names what failed, and no credentials or URLs."""
        where = self.object_url(key) if key is not None else self.url
        if isinstance(error, ClientError):
            info = error.response.get("Error", {})
            code = str(info.get("Code") or "error")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{code} (HTTP {status})" if status else code
            message = str(info.get("Message") or "")
            if message and self._safe(message):
                detail += f": {message[:300]}"
        elif isinstance(error, NoCredentialsError | PartialCredentialsError):
            detail = "no complete S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY …)"
        else:
            detail = type(error).__name__
        return StorageError(f"S3 {operation} of {where} failed: {detail}")

    def _safe(self, text: str) -> bool:
        return not _UNSAFE_MESSAGE.search(text) and not any(s in text for s in self._secrets)

    async def _call(self, operation: str, key: str | None, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except (BotoCoreError, ClientError, Urllib3Error, OSError) as error:
            raise self._error(operation, key, error) from None

    # -- the Storage interface ----------------------------------------------------------

    def object_url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    async def open_writer(self, key: str) -> ObjectWriter:
        full_key = self._key(key)
        response = await self._call(
            "create_multipart_upload",
            key,
            lambda: self._client().create_multipart_upload(Bucket=self.bucket, Key=full_key),
        )
        return _S3Writer(self, key, full_key, str(response["UploadId"]))

    async def read(self, key: str, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        full_key = self._key(key)
        try:
            response = await asyncio.to_thread(
                lambda: self._client().get_object(Bucket=self.bucket, Key=full_key)
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _NOT_FOUND:
                raise StorageError(f"no object {key!r} in {self.url}") from None
            raise self._error("get_object", key, error) from None
        except (BotoCoreError, Urllib3Error, OSError) as error:
            raise self._error("get_object", key, error) from None
        body = response["Body"]
        chunks = body.iter_chunks(chunk_size)
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(next, chunks, b"")
                except (BotoCoreError, ClientError, Urllib3Error, OSError) as error:
                    raise self._error("get_object", key, error) from None
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def size(self, key: str) -> int | None:
        full_key = self._key(key)
        try:
            response = await asyncio.to_thread(
                lambda: self._client().head_object(Bucket=self.bucket, Key=full_key)
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise self._error("head_object", key, error) from None
        except (BotoCoreError, Urllib3Error, OSError) as error:
            raise self._error("head_object", key, error) from None
        return int(response["ContentLength"])

    async def delete(self, key: str) -> None:
        full_key = self._key(key)
        await self._call(
            "delete_object",
            key,
            lambda: self._client().delete_object(Bucket=self.bucket, Key=full_key),
        )

    async def abort_partial(self, key: str, upload_id: str) -> None:
        if not upload_id or len(upload_id) > 1024:
            raise StorageError("not an S3 upload id")
        await self._abort(key, self._key(key), upload_id)

    async def _abort(self, key: str, full_key: str, upload_id: str) -> None:
        try:
            await asyncio.to_thread(
                lambda: self._client().abort_multipart_upload(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id
                )
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in {"NoSuchUpload", "404"}:
                raise self._error("abort_multipart_upload", key, error) from None
        except (BotoCoreError, Urllib3Error, OSError) as error:
            raise self._error("abort_multipart_upload", key, error) from None

    async def partials(self, older_than: dt.timedelta) -> list[Partial]:
        listing_prefix = f"{self.prefix}/" if self.prefix else ""

        def scan() -> list[Partial]:
            cutoff = dt.datetime.now(dt.UTC) - older_than
            found = []
            pages = (
                self._client()
                .get_paginator("list_multipart_uploads")
                .paginate(Bucket=self.bucket, Prefix=listing_prefix)
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    full_key = str(upload["Key"])
                    started: dt.datetime = upload["Initiated"]
                    if started.tzinfo is None:
                        started = started.replace(tzinfo=dt.UTC)
                    started = started.astimezone(dt.UTC)
                    if not full_key.startswith(listing_prefix) or started >= cutoff:
                        continue
                    key = full_key[len(listing_prefix) :]
                    found.append(Partial(key, str(upload["UploadId"]), started))
            return found

        return await self._call("list_multipart_uploads", None, scan)


class _S3Writer:
    """One multipart upload: a part is sent each time ``part_size`` bytes are buffered."""

    def __init__(self, storage: S3Storage, key: str, full_key: str, upload_id: str) -> None:
        self._storage = storage
        self._key = key
        self._full_key = full_key
        self.upload_id = upload_id
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._finished = False

    async def write(self, chunk: bytes) -> None:
        if self._finished:
            raise StorageError("the object is already completed or aborted")
        self._buffer += chunk
        size = self._storage.part_size
        while len(self._buffer) >= size:
            part = bytes(self._buffer[:size])
            del self._buffer[:size]
            await self._upload(part)

    async def _upload(self, data: bytes) -> None:
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageError(
                f"the object {self._key!r} needs more than {MAX_PARTS} parts: raise the part size"
            )
        storage = self._storage
        response = await storage._call(
            "upload_part",
            self._key,
            lambda: storage._client().upload_part(
                Bucket=storage.bucket,
                Key=self._full_key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
            ),
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    async def complete(self) -> None:
        if self._finished:
            raise StorageError("the object is already completed or aborted")
        storage = self._storage
        if not self._parts and not self._buffer:
            # An empty object: not every server takes a multipart upload of one empty
            # part, so the upload is dropped and an empty object put instead.
            await storage._abort(self._key, self._full_key, self.upload_id)
            await storage._call(
                "put_object",
                self._key,
                lambda: storage._client().put_object(
                    Bucket=storage.bucket, Key=self._full_key, Body=b""
                ),
            )
            self._finished = True
            return
        if self._buffer:
            tail = bytes(self._buffer)
            self._buffer = bytearray()
            await self._upload(tail)
        # The response's ETag is not used (Ceph RGW answers an empty one).
        await storage._call(
            "complete_multipart_upload",
            self._key,
            lambda: storage._client().complete_multipart_upload(
                Bucket=storage.bucket,
                Key=self._full_key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self._parts},
            ),
        )
        self._finished = True

    async def abort(self) -> None:
        self._finished = True
        self._buffer = bytearray()
        await self._storage._abort(self._key, self._full_key, self.upload_id)
