"""The backup storage on each backend: a local folder (``file``), moto's S3 emulator
(``moto``) and a real S3, Ceph's RADOS Gateway started privately (``rgw``).

The test ids say which one ran: ``[file]``, ``[moto-emulator]``, ``[rgw-real-s3]``. What
moto accepts proves little on its own (it is an emulator); the tests that matter run on the
gateway too, and the credential tests only there (moto checks no signatures).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.backups.storage import FileStorage, Partial, Storage, StorageError
from app.backups.storage_s3 import MIN_PART_SIZE, S3Storage
from app.backups.targets import open_storage
from tests.backups.s3_server import S3Server

MIB = 1 << 20
PART = MIN_PART_SIZE  # the smallest part S3 takes: the multi-part tests stay small
FILE = pytest.param("file", id="file")
MOTO = pytest.param("moto", id="moto-emulator")
# One gateway per session: its tests stay on one xdist worker.
RGW = pytest.param("rgw", id="rgw-real-s3", marks=pytest.mark.xdist_group("rgw"))
BAD_KEYS = ["../x", "a//b", "/abs", "a/../b", "./a", "a/", "", "a b", "a\\b", "x/.."]


@dataclass
class Case:
    kind: str
    storage: Storage
    root: Path | None = None  # file
    server: S3Server | None = None  # moto, rgw
    bucket: str = ""
    prefix: str = ""

    def uploads(self) -> list[dict[str, object]]:
        """The multipart uploads the server holds under this case's prefix."""
        assert self.server is not None
        response = self.server.client().list_multipart_uploads(
            Bucket=self.bucket, Prefix=self.prefix + "/"
        )
        uploads: list[dict[str, object]] = response.get("Uploads", [])
        return uploads

    def parts(self, key: str, upload_id: str) -> list[int]:
        """The sizes of the parts the server holds for an upload."""
        assert self.server is not None
        response = self.server.client().list_parts(
            Bucket=self.bucket, Key=f"{self.prefix}/{key}", UploadId=upload_id
        )
        return [int(part["Size"]) for part in response.get("Parts", [])]


_buckets: dict[str, str] = {}


def _case(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    if kind == "file":
        root = tmp_path / "backups"
        return Case(kind, FileStorage(root), root=root)
    server: S3Server = request.getfixturevalue(f"{kind}_s3")
    if kind not in _buckets:
        _buckets[kind] = server.create_bucket()
    bucket = _buckets[kind]
    prefix = f"t-{uuid.uuid4().hex[:12]}/backups"  # each test its own prefix
    storage = server.storage(f"s3://{bucket}/{prefix}", part_size=PART)
    return Case(kind, storage, server=server, bucket=bucket, prefix=prefix)


@pytest.fixture
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    return _case(request.param, request, tmp_path)


async def _write(storage: Storage, key: str, data: bytes, chunk: int = MIB + 7) -> str:
    writer = await storage.open_writer(key)
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])
    await writer.complete()
    return writer.upload_id


async def _read(storage: Storage, key: str, chunk_size: int) -> tuple[bytes, int]:
    """The object's bytes and the largest chunk the stream gave."""
    chunks = [chunk async for chunk in storage.read(key, chunk_size)]
    return b"".join(chunks), max((len(c) for c in chunks), default=0)


async def _missing(storage: Storage, key: str) -> StorageError:
    with pytest.raises(StorageError) as caught:
        async for _ in storage.read(key):
            pass
    return caught.value


@pytest.mark.parametrize("case", [FILE, MOTO, RGW], indirect=True)
async def test_round_trip_of_a_multi_part_object(case: Case) -> None:
    """Three full parts and a tail, written in odd-sized chunks, on the folder, moto and
    the real gateway: parts are sent while writing (the server holds them before
    ``complete``), nothing is visible before ``complete``, the streamed read gives the same
    bytes in bounded chunks; size, delete (twice) and a read of the deleted key."""
    storage = case.storage
    key = "prod/app/20260101T000000Z_run1.dump.gz"
    data = os.urandom(3 * PART + 12_345)
    writer = await storage.open_writer(key)
    assert writer.upload_id
    for start in range(0, len(data), MIB + 7):
        await writer.write(data[start : start + MIB + 7])
    if case.server is not None:
        assert case.parts(key, writer.upload_id) == [PART, PART, PART]
    assert await storage.size(key) is None
    await _missing(storage, key)
    await writer.complete()

    assert await storage.size(key) == len(data)
    read, largest = await _read(storage, key, 256 * 1024)
    assert hashlib.sha256(read).hexdigest() == hashlib.sha256(data).hexdigest()
    assert largest <= 256 * 1024
    assert await storage.partials(dt.timedelta(0)) == []
    if case.server is not None:
        assert storage.object_url(key) == f"s3://{case.bucket}/{case.prefix}/{key}"
        assert case.uploads() == []
    else:
        assert case.root is not None
        assert storage.object_url(key) == (case.root / key).as_uri()

    await storage.delete(key)
    await storage.delete(key)
    assert await storage.size(key) is None
    assert "prod/app/20260101T000000Z_run1.dump.gz" in str(await _missing(storage, key))


@pytest.mark.parametrize("case", [FILE, MOTO], indirect=True)
async def test_missing_object(case: Case) -> None:
    """A key never written (folder, moto): no size, a read is a StorageError, delete is
    fine; on S3 a missing bucket is a StorageError too."""
    assert await case.storage.size("never/written") is None
    await _missing(case.storage, "never/written")
    await case.storage.delete("never/written")
    if case.server is not None:
        gone = case.server.storage("s3://fo-no-such-bucket-here/x")
        with pytest.raises(StorageError, match="NoSuchBucket"):
            await gone.open_writer("a")


@pytest.mark.parametrize("case", [FILE, MOTO, RGW], indirect=True)
async def test_an_aborted_writer_leaves_nothing(case: Case) -> None:
    """Folder, moto, real gateway: after a part was sent, ``abort`` (twice) leaves no
    object, no partial file and no multipart upload; the writer refuses more bytes."""
    storage = case.storage
    key = "prod/app/aborted.dump"
    writer = await storage.open_writer(key)
    await writer.write(os.urandom(PART + 100))
    if case.server is not None:
        assert case.parts(key, writer.upload_id) == [PART]
    await writer.abort()
    await writer.abort()
    assert await storage.size(key) is None
    assert await storage.partials(dt.timedelta(0)) == []
    if case.server is not None:
        assert case.uploads() == []
        with pytest.raises(StorageError):
            await writer.write(b"more")
    else:
        assert case.root is not None
        assert [p for p in case.root.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("case", [FILE, MOTO, RGW], indirect=True)
async def test_an_abandoned_writer_is_found_and_removed(case: Case) -> None:
    """Folder, moto, real gateway: a writer that is never completed nor aborted (its
    worker died) leaves an upload that ``partials`` finds under its key and upload id, and
    that ``abort_partial`` removes (twice); its key never became visible."""
    storage = case.storage
    key = "staging/db/20260101T000000Z_run2.sql.gz"
    other = "staging/db/finished.sql.gz"
    await _write(storage, other, b"done")
    before = dt.datetime.now(dt.UTC)
    writer = await storage.open_writer(key)
    await writer.write(os.urandom(PART + 1))
    upload_id = writer.upload_id
    del writer  # abandoned

    assert await storage.size(key) is None
    await _missing(storage, key)
    found = await storage.partials(dt.timedelta(0))
    assert [(p.key, p.upload_id) for p in found] == [(key, upload_id)]
    assert isinstance(found[0], Partial)
    if case.kind != "moto":  # the emulator dates every upload 2010-11-10T20:48:33Z
        assert await storage.partials(dt.timedelta(hours=1)) == []
        started = found[0].started_at
        assert before - dt.timedelta(seconds=5) <= started <= dt.datetime.now(dt.UTC)

    await storage.abort_partial(key, upload_id)
    await storage.abort_partial(key, upload_id)
    assert await storage.partials(dt.timedelta(0)) == []
    assert await storage.size(key) is None
    assert await storage.size(other) == 4
    if case.server is not None:
        assert case.uploads() == []


@pytest.mark.parametrize("case", [FILE, MOTO, RGW], indirect=True)
async def test_an_empty_object(case: Case) -> None:
    """Folder, moto, real gateway: a writer completed without bytes (or with an empty
    chunk) stores a 0-byte object and leaves no upload behind."""
    storage = case.storage
    writer = await storage.open_writer("empty/one")
    await writer.complete()
    writer = await storage.open_writer("empty/two")
    await writer.write(b"")
    await writer.complete()
    for key in ("empty/one", "empty/two"):
        assert await storage.size(key) == 0
        assert await _read(storage, key, MIB) == (b"", 0)
    assert await storage.partials(dt.timedelta(0)) == []
    if case.server is not None:
        assert case.uploads() == []


@pytest.mark.parametrize("case", [FILE, MOTO], indirect=True)
@pytest.mark.parametrize("key", BAD_KEYS)
async def test_keys_that_could_escape_are_refused(case: Case, key: str) -> None:
    """Folder and moto (S3 refuses before any request, so the real gateway adds
    nothing): every operation refuses a key that could leave the root or prefix."""
    storage = case.storage
    with pytest.raises(StorageError, match="not a valid object key"):
        await storage.open_writer(key)
    assert "not a valid object key" in str(await _missing(storage, key))
    with pytest.raises(StorageError, match="not a valid object key"):
        await storage.size(key)
    with pytest.raises(StorageError, match="not a valid object key"):
        await storage.delete(key)
    with pytest.raises(StorageError, match="not a valid object key"):
        await storage.abort_partial(key, "x.partial")
    with pytest.raises(StorageError, match="not a valid object key"):
        storage.object_url(key)
    if case.server is not None:
        assert case.uploads() == []
        listing = case.server.client().list_objects_v2(Bucket=case.bucket, Prefix=case.prefix)
        assert listing.get("KeyCount", 0) == 0


@pytest.mark.xdist_group("rgw")
async def test_wrong_credentials_are_a_storage_error_without_them(rgw_s3: S3Server) -> None:
    """Real gateway (moto checks no signatures): a wrong secret key, and an unknown access
    key, give a StorageError naming the refusal and neither key."""
    bucket = rgw_s3.create_bucket()
    wrong_secret = "wrong-secret-key-0123456789abcdefghijklm"
    cases = [
        (rgw_s3.access_key, wrong_secret, "SignatureDoesNotMatch"),
        ("FOUNKNOWNACCESSKEY99", wrong_secret, "InvalidAccessKeyId"),
    ]
    for access_key, secret_key, code in cases:
        storage = rgw_s3.storage(f"s3://{bucket}/p", access_key=access_key, secret_key=secret_key)
        errors = []
        with pytest.raises(StorageError) as caught:
            await storage.open_writer("a/b")
        errors.append(str(caught.value))
        assert code in errors[0]
        with pytest.raises(StorageError) as caught:
            await storage.size("a/b")  # HEAD: a 403 without a body
        errors.append(str(caught.value))
        errors.append(str(await _missing(storage, "a/b")))
        with pytest.raises(StorageError) as caught:
            await storage.partials(dt.timedelta(0))
        errors.append(str(caught.value))
        for message in errors:
            assert "403" in message
            for secret in (access_key, secret_key, rgw_s3.secret_key):
                assert secret not in message


@pytest.mark.xdist_group("rgw")
async def test_open_storage_uses_the_default_credential_chain(
    rgw_s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real gateway: what production does, ``open_storage`` with the credentials in the
    usual ``AWS_*`` variables (set for this test only)."""
    bucket = rgw_s3.create_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw_s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", rgw_s3.region)
    storage = open_storage(f"s3://{bucket}/backups/", s3_endpoint_url=rgw_s3.endpoint_url)
    assert isinstance(storage, S3Storage)
    assert storage.url == f"s3://{bucket}/backups"
    await _write(storage, "k/one", b"x" * 1000)
    assert await _read(storage, "k/one", 300) == (b"x" * 1000, 300)
    listing = rgw_s3.client().list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listing["Contents"]] == ["backups/k/one"]


@pytest.mark.parametrize("case", [MOTO], indirect=True)
async def test_no_credentials_is_a_clear_storage_error(
    case: Case, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """moto: with no credentials anywhere in boto3's chain (for this test only) an
    operation is a StorageError saying so, before any request."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert case.server is not None
    storage = S3Storage.from_url(
        f"s3://{case.bucket}/{case.prefix}", endpoint_url=case.server.endpoint_url
    )
    with pytest.raises(StorageError, match="no complete S3 credentials"):
        await storage.open_writer("a/b")
    assert case.uploads() == []


def test_s3_urls() -> None:
    """No server: what ``s3://`` URLs name, and the ones refused (credentials in the URL
    are never echoed)."""
    keys: dict[str, Any] = {
        "access_key": "AKIAEXAMPLE",
        "secret_key": "s3cr3t",
        "region": "eu-west-1",
    }
    storage = S3Storage.from_url("s3://my-bucket", endpoint_url=None, **keys)
    assert storage.url == "s3://my-bucket"
    assert storage.object_url("a/b.gz") == "s3://my-bucket/a/b.gz"
    storage = S3Storage.from_url("s3://my.bucket/pre/fix/", endpoint_url=None, **keys)
    assert storage.url == "s3://my.bucket/pre/fix"
    assert storage.object_url("a/b.gz") == "s3://my.bucket/pre/fix/a/b.gz"
    assert storage.part_size == 8 * MIB
    refused = [
        "s3://",
        "s3:///prefix",
        "s3://user:hunter2pass@bucket/x",
        "s3://bucket:9000/x",
        "s3://Bad_Bucket/x",
        "s3://ab",
        "s3://bucket/../x",
        "s3://bucket/a//b",
        "s3://bucket//a",
        "s3://bucket/x?versionId=1",
        "s3://bucket/x#frag",
        "file:///tmp/x",
    ]
    for url in refused:
        with pytest.raises(StorageError) as caught:
            S3Storage.from_url(url, endpoint_url=None, **keys)
        assert "hunter2pass" not in str(caught.value)
    for part_size in (MIN_PART_SIZE - 1, 6 * 1024 * MIB):
        with pytest.raises(StorageError, match="part size"):
            S3Storage.from_url("s3://bucket", endpoint_url=None, part_size=part_size, **keys)
    for endpoint in ("ftp://host", "http://", "http://user:hunter2pass@host:9000", "127.0.0.1"):
        with pytest.raises(StorageError, match="endpoint URL") as caught:
            S3Storage.from_url("s3://bucket", endpoint_url=endpoint, **keys)
        assert "hunter2pass" not in str(caught.value)
    with pytest.raises(StorageError, match="both"):
        S3Storage.from_url("s3://bucket", endpoint_url=None, access_key="a")
